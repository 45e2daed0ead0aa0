// The TorchScript member of the zoo: any module a researcher saved with
// torch.jit.script(model).save(path), made a pure function of the flat θ[d]. Its parameters
// (named_parameters order) become the layout; every forward points each module parameter at a view
// of θ before calling the module, so autograd reaches θ exactly as for the built-in layers.
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "layers.hpp"
#include "models.hpp"

namespace bulwark::detail {

namespace {

// One line out of a LibTorch message: the interpreter prints a TorchScript traceback and puts the
// actual error ("RuntimeError: mat1 and mat2 shapes cannot be multiplied ...") last; other errors
// lead with it.
std::string one_line(const std::string& text) {
  const auto end = text.find_last_not_of(" \n");
  if (end == std::string::npos) return text;
  if (text.find("Traceback of TorchScript") == std::string::npos)
    return text.substr(0, text.find('\n'));
  const auto newline = text.rfind('\n', end);
  const auto start = newline == std::string::npos ? 0 : newline + 1;
  return text.substr(start, end + 1 - start);
}

// Where one parameter lives inside a module: the (sub)module object and its attribute slot.
struct Slot {
  c10::intrusive_ptr<c10::ivalue::Object> owner;
  std::size_t index = 0;
};

// One clone of the module per calling thread: pointing parameters at θ mutates the module.
struct Replica {
  torch::jit::Module module;
  std::vector<Slot> slots;         // layout order
  std::vector<torch::Tensor> own;  // the clone's own parameters, restored after each call
};

torch::jit::Module load_module(const std::string& path) {
  const auto fail = [&](const std::string& reason) {
    return Error(ErrorKind::Data, path + ": cannot load TorchScript model: " + reason +
                                      "; save it with torch.jit.script(model).save(path)");
  };
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw fail("no such file");
  if (!std::filesystem::is_regular_file(path, ec)) throw fail("not a regular file");
  try {
    return torch::jit::load(path, torch::kCPU);
  } catch (const c10::Error& e) {
    throw fail(one_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw fail(one_line(e.what()));
  }
}

class TorchScriptModel final : public Model {
 public:
  TorchScriptModel(std::string path, Shape input, std::int64_t num_classes)
      : path_(std::move(path)), input_(std::move(input)), prototype_(load_module(path_)) {
    // Eval mode: the model must be a pure function of θ (dropout off, normalisation buffers
    // frozen), otherwise per-example gradients and thread-count independence would not hold.
    prototype_.eval();
    prototype_.to(torch::kFloat);
    std::vector<torch::Tensor> values;
    for (const auto& p : prototype_.named_parameters(/*recurse=*/true)) {
      layout_.add(p.name, p.value.sizes().vec());
      values.push_back(p.value.detach().reshape({-1}));
    }
    if (values.empty()) {
      throw Error(ErrorKind::Data, path_ + ": the TorchScript model has no parameters to train");
    }
    initial_ = torch::cat(values);
    for (const auto& entry : layout_.entries) numels_.push_back(entry.numel);

    // One example of zeros: the module must take the dataset's inputs and return logits.
    std::vector<std::int64_t> probe_shape{1};
    probe_shape.insert(probe_shape.end(), input_.begin(), input_.end());
    torch::Tensor out;
    try {
      torch::NoGradGuard no_grad;
      out = forward(initial_, torch::zeros(probe_shape));
    } catch (const Error& e) {
      std::string reason = e.what();
      if (reason.rfind(path_ + ": ", 0) == 0) reason = reason.substr(path_.size() + 2);
      throw Error(ErrorKind::Config,
                  path_ + ": the TorchScript model cannot take the dataset's inputs " +
                      shape_string(probe_shape) + ": " + reason);
    }
    if (out.sizes() != torch::IntArrayRef{1, num_classes}) {
      throw Error(ErrorKind::Config, path_ + ": the TorchScript model returns shape " +
                                         shape_string(out.sizes().vec()) + " for inputs " +
                                         shape_string(probe_shape) + "; expected [1, " +
                                         std::to_string(num_classes) + "] logits");
    }
  }

  const ParamLayout& layout() const override { return layout_; }

  torch::Tensor forward(const torch::Tensor& params, const torch::Tensor& inputs) const override {
    check(params, inputs);
    auto& replica = this_thread_replica();
    auto parts = params.split_with_sizes(numels_);
    // Put the clone's own tensors back on the way out (also on errors), so that it does not keep
    // the caller's θ, and the autograd graph behind it, alive until the next call.
    struct Restore {
      Replica& r;
      ~Restore() {
        for (std::size_t i = 0; i < r.slots.size(); ++i)
          r.slots[i].owner->setSlot(r.slots[i].index, r.own[i]);
      }
    } restore{replica};
    for (std::size_t i = 0; i < parts.size(); ++i) {
      replica.slots[i].owner->setSlot(replica.slots[i].index,
                                      parts[i].view(layout_.entries[i].shape));
    }
    // The plain interpreter (a thread-local switch): the optimising executor would profile the
    // first calls and fuse ops into differentiable subgraphs, which lack double backward, and
    // gradient-matching attacks differentiate through gradients.
    torch::jit::GraphOptimizerEnabledGuard plain(false);
    c10::IValue out;
    try {
      out = replica.module.forward({inputs});
    } catch (const c10::Error& e) {
      throw Error(ErrorKind::Runtime,
                  path_ + ": forward() failed: " + one_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {  // the interpreter rethrows op failures as runtime_error
      throw Error(ErrorKind::Runtime, path_ + ": forward() failed: " + one_line(e.what()));
    }
    if (!out.isTensor()) {
      throw Error(ErrorKind::Runtime, path_ + ": forward() must return one tensor of logits");
    }
    return out.toTensor();
  }

  // No per-layer rules for an arbitrary graph: one batch-size-1 backward pass per example.
  torch::Tensor per_example_gradients(const torch::Tensor& params, const torch::Tensor& inputs,
                                      const torch::Tensor& labels) const override {
    check(params, inputs);
    const auto batch = inputs.size(0);
    auto result = torch::zeros({batch, layout_.total});
    torch::AutoGradMode grad_mode(true);
    auto theta = params.detach().requires_grad_(true);
    for (std::int64_t b = 0; b < batch; ++b) {
      auto logits = forward(theta, inputs.narrow(0, b, 1));
      auto loss = torch::nn::functional::cross_entropy(
          logits, labels.narrow(0, b, 1),
          torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
      auto grad = torch::autograd::grad({loss}, {theta}, /*grad_outputs=*/{},
                                        /*retain_graph=*/false, /*create_graph=*/false,
                                        /*allow_unused=*/true)[0];
      torch::NoGradGuard no_grad;
      if (grad.defined()) result[b].copy_(grad);
    }
    return result;
  }

  bool vectorised() const override { return false; }

  // The module's saved parameters: an arbitrary graph has no layer types to re-initialise from.
  torch::Tensor initial_parameters(std::uint64_t /*seed*/) const override {
    return initial_.clone();
  }

  std::string describe() const override {
    return "torchscript (" + path_ + ", " + std::to_string(layout_.entries.size()) +
           " tensors), d = " + thousands(layout_.total);
  }

 private:
  void check(const torch::Tensor& params, const torch::Tensor& inputs) const {
    if (params.dim() != 1 || params.size(0) != layout_.total) {
      throw Error(ErrorKind::Runtime, path_ + ": the model takes parameters [" +
                                          std::to_string(layout_.total) + "], got " +
                                          shape_string(params.sizes().vec()));
    }
    const auto sizes = inputs.sizes();
    if (inputs.dim() != static_cast<std::int64_t>(input_.size()) + 1 ||
        !std::equal(input_.begin(), input_.end(), sizes.begin() + 1)) {
      throw Error(ErrorKind::Runtime, path_ + ": the model takes inputs [B, " +
                                          shape_string(input_).substr(1) + ", got " +
                                          shape_string(sizes.vec()));
    }
  }

  Replica& this_thread_replica() const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& replica = replicas_[std::this_thread::get_id()];
    if (!replica) {
      replica = std::make_unique<Replica>();
      replica->module = prototype_.clone();
      for (const auto& entry : layout_.entries) {
        // "block.0.weight": walk the submodules, then find the attribute slot of the last part.
        auto owner = replica->module;
        std::string rest = entry.name;
        for (auto dot = rest.find('.'); dot != std::string::npos; dot = rest.find('.')) {
          owner = owner.attr(rest.substr(0, dot)).toModule();
          rest = rest.substr(dot + 1);
        }
        Slot slot{owner._ivalue(), owner.type()->getAttributeSlot(rest)};
        replica->own.push_back(slot.owner->getSlot(slot.index).toTensor());
        replica->slots.push_back(std::move(slot));
      }
    }
    return *replica;
  }

  std::string path_;
  Shape input_;
  torch::jit::Module prototype_;  // never run; cloned for each calling thread
  ParamLayout layout_;
  std::vector<std::int64_t> numels_;
  torch::Tensor initial_;
  // Keyed by thread: worker threads live for the whole run, so the map stays as small as the pool.
  mutable std::mutex mutex_;
  mutable std::map<std::thread::id, std::unique_ptr<Replica>> replicas_;
};

}  // namespace

std::unique_ptr<Model> load_torchscript_model(const std::string& path,
                                              const std::vector<std::int64_t>& input_shape,
                                              std::int64_t num_classes) {
  return std::make_unique<TorchScriptModel>(path, input_shape, num_classes);
}

}  // namespace bulwark::detail
