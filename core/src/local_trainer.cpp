// Determinism: a client's batches come from its (seed, round, client) batch stream and its noise
// and data-poisoning draws from its own streams, so its numbers are those it would get training
// alone, on any worker and in any stacked chunk (batching_test holds that bit for bit).
#include "local_trainer.hpp"

#include <torch/torch.h>

#include <cmath>

#include "bulwark/rng.hpp"
#include "models.hpp"

namespace bulwark {

LocalTrainer::LocalTrainer(const RunSettings& settings, const PluginSet& plugins, const Dataset& data,
                           const Model& model)
    : settings_(settings),
      plugins_(plugins),
      data_(data),
      model_(model),
      stacked_(dynamic_cast<const detail::StackedModel*>(&model)) {}

std::vector<double> LocalTrainer::train(std::int64_t round, const torch::Tensor& theta,
                                        const std::vector<LocalJob>& jobs, std::int64_t width) const {
  Pass pass;
  pass.width = width;
  return run(round, theta, jobs, pass);
}

torch::Tensor LocalTrainer::server_update(std::int64_t round, const torch::Tensor& theta, const torch::Tensor& shared,
                                          std::int64_t client, std::int64_t steps) const {
  auto row = torch::empty({theta.size(0)}, theta.options());
  Pass pass;
  pass.server_side = true;
  run(round, theta, {{shared, steps, client, -1, row}}, pass);
  return row;
}

ObservedStep LocalTrainer::observe_first_step(std::int64_t round, const torch::Tensor& theta,
                                              const torch::Tensor& indices, std::int64_t client,
                                              std::int64_t batch) const {
  ObservedStep observed;
  observed.upload = torch::empty({theta.size(0)}, theta.options());
  Pass pass;
  pass.batch_size = batch;
  pass.observed = &observed;
  run(round, theta, {{indices, settings_.clients.schedule.steps(indices.size(0)), client, -1, observed.upload}}, pass);
  return observed;
}

std::vector<double> LocalTrainer::run(std::int64_t round, const torch::Tensor& theta,
                                      const std::vector<LocalJob>& jobs, const Pass& pass) const {
  const auto& c = settings_.clients;
  const auto seed = settings_.seed;
  const auto device = theta.device();
  const auto clients = static_cast<std::int64_t>(jobs.size());
  const auto d = theta.size(0);
  std::vector<double> losses(clients, 0.0);
  if (clients == 1 && jobs[0].indices.size(0) == 0) {
    jobs[0].row.zero_();
    return {std::nan("")};
  }
  const bool stacked = pass.width > 0;
  const auto width = pass.width;
  const bool fedsgd = settings_.mode == Mode::FedSgd;
  const double lr = c.lr.at(round, settings_.rounds);
  const auto& privacy = plugins_.privacy;
  const bool private_round = privacy && !pass.server_side && round >= settings_.privacy_start_round;
  PrivacyMechanism* mechanism = private_round ? privacy.operator->() : nullptr;
  const bool per_example = mechanism && mechanism->per_example();
  const auto steps = jobs[0].steps;
  const auto steps_run = pass.observed ? 1 : steps;

  // Each client keeps its own random streams and epoch order.
  struct Cursor {
    std::int64_t n, batch, batches_per_epoch;
    at::Generator batches, attack, privacy;
    bool poisons_data, shapes_steps;
    torch::Tensor epoch;  // this epoch's shuffled example indices
  };
  std::vector<Cursor> cursors;
  for (const auto& job : jobs) {
    const auto n = job.indices.size(0);
    const auto batch = pass.batch_size > 0 ? std::min(pass.batch_size, n) : c.schedule.batch(n);
    cursors.push_back({n, batch, (n + batch - 1) / batch,
                       stream_generator(seed, round, job.client, pass.server_side ? Stream::Aggregator : Stream::Batches),
                       stream_generator(seed, round, job.client, Stream::Attack, device),
                       stream_generator(seed, round, job.client, Stream::Privacy, device),
                       job.attack_index >= 0 && plugins_.attacks[job.attack_index]->poisons_data(),
                       job.attack_index >= 0 && plugins_.attacks[job.attack_index]->shapes_steps(),
                       {}});
  }

  auto local = theta.unsqueeze(0).repeat({clients, 1});  // Θ [K, d]
  for (std::int64_t k = 0; k < clients; ++k) {
    if (jobs[k].start.defined()) local[k].copy_(jobs[k].start);
  }
  local.requires_grad_(true);
  // RSA's pull towards θ (ClientProtocol::sign_penalty); the server's own runs are plain SGD.
  const double sign_penalty = pass.server_side ? 0.0 : plugins_.aggregator->client_protocol().sign_penalty;
  torch::Tensor velocity, loss_sums;
  for (std::int64_t step = 0; step < steps_run; ++step) {
    // Each client's batch is a window of its epoch's shuffled indices; stacked, client k's fills
    // rows [k·width, k·width + size_k), and shorter batches (an epoch's last, a client with fewer
    // than B examples) are padded with zero rows that carry no loss. One gather serves all.
    std::vector<torch::Tensor> takes;
    std::vector<std::int64_t> sizes;
    for (std::int64_t k = 0; k < clients; ++k) {
      auto& cursor = cursors[k];
      const auto position = (step % cursor.batches_per_epoch) * cursor.batch;
      if (position == 0) {
        cursor.epoch = jobs[k].indices.index_select(0, torch::randperm(cursor.n, cursor.batches, torch::kLong)).to(device);
      }
      const auto size = std::min(cursor.batch, cursor.n - position);
      takes.push_back(cursor.epoch.narrow(0, position, size));
      if (stacked && size < width) takes.push_back(cursor.epoch.narrow(0, 0, 1).expand({width - size}));
      sizes.push_back(size);
    }
    const auto stride = stacked ? width : sizes[0];
    const auto take = takes.size() == 1 ? takes[0] : torch::cat(takes);
    auto inputs = data_.train_inputs.index_select(0, take);
    auto labels = data_.train_labels.index_select(0, take);
    for (std::int64_t k = 0; k < clients; ++k) {
      if (sizes[k] < stride) {
        inputs.narrow(0, k * stride + sizes[k], stride - sizes[k]).zero_();
        labels.narrow(0, k * stride + sizes[k], stride - sizes[k]).zero_();
      }
      if (cursors[k].poisons_data) {
        poison_batch(round, jobs[k], cursors[k].attack, inputs.narrow(0, k * stride, sizes[k]),
                     labels.narrow(0, k * stride, sizes[k]));
      }
    }
    // Each client's mean cross-entropy over its own rows, from per-row values [K·width]; the sum's
    // gradient is each client's own.
    auto client_losses = [&](const torch::Tensor& row_losses) {
      if (!stacked) return row_losses.mean().view({1});
      auto size = torch::tensor(sizes, torch::kLong).to(device).unsqueeze(1);
      auto weight = (torch::arange(width, size.options()).unsqueeze(0) < size).to(torch::kFloat) / size;
      return (row_losses.view({clients, width}) * weight).sum(1);
    };
    auto row_losses_of = [&](const torch::Tensor& params) {
      auto logits = stacked ? stacked_->forward_stacked(params, inputs) : model_.forward(params.view({d}), inputs);
      return torch::cross_entropy_loss(logits, labels, {}, at::Reduction::None);
    };

    torch::Tensor gradient, step_losses;
    auto step_context = [&](std::int64_t k) {
      PrivacyStepContext context{round, settings_.rounds, jobs[k].client, step, steps, sizes[k],
                                 &model_.layout(), cursors[k].privacy};
      // A mechanism may skip writing the rows back when nobody reads them after the hook.
      context.rows_observed = pass.observed != nullptr;
      return context;
    };
    if (per_example && stacked_ && !pass.observed && mechanism->clips_by_layer_norms()) {
      // Ghost clipping: each client's clipped sum from the layers' norms, never the [K·B, d] rows.
      auto clip_factors = [&](const torch::Tensor& norms) {
        auto factors = torch::zeros_like(norms);  // padding rows carry no gradient
        for (std::int64_t k = 0; k < clients; ++k) {
          const auto context = step_context(k);
          factors.narrow(0, k * stride, sizes[k]).copy_(call_plugin(privacy.label, "clip_factors", [&] {
            return mechanism->clip_factors(norms.narrow(0, k * stride, sizes[k]), context);
          }));
        }
        return factors;
      };
      torch::Tensor row_losses;
      auto sums = stacked_->clipped_gradient_sums_stacked(stacked ? local : local.view({d}), inputs, labels,
                                                          clip_factors, &row_losses)
                      .view({clients, d});
      gradient = torch::empty({clients, d}, theta.options());
      for (std::int64_t k = 0; k < clients; ++k) {
        const auto context = step_context(k);
        auto sum = sums[k];
        gradient[k].copy_(call_plugin(privacy.label, "privatize_clipped_sum",
                                      [&] { return mechanism->privatize_clipped_sum(sum, context); }));
      }
      step_losses = client_losses(row_losses);
    } else if (per_example) {
      // The zoo models hand back the per-row losses of the pass; others cost one more forward.
      torch::Tensor rows, row_losses;
      if (stacked_) {
        rows = stacked_->per_example_gradients_stacked(stacked ? local : local.view({d}), inputs, labels, &row_losses);
      } else {
        rows = model_.per_example_gradients(local.view({d}), inputs, labels);
        torch::NoGradGuard no_grad;
        row_losses = row_losses_of(local);
      }
      gradient = torch::empty({clients, d}, theta.options());
      for (std::int64_t k = 0; k < clients; ++k) {
        const auto context = step_context(k);
        auto own = rows.narrow(0, k * stride, sizes[k]);
        gradient[k].copy_(call_plugin(privacy.label, "privatize_gradients",
                                      [&] { return mechanism->privatize_gradients(own, context); }));
        if (pass.observed) pass.observed->rows = own.detach().clone();  // the model may reuse its buffer
      }
      step_losses = client_losses(row_losses);
    } else {
      step_losses = client_losses(row_losses_of(local));
      gradient = torch::autograd::grad({step_losses.sum()}, {local})[0];
      if (pass.observed) pass.observed->rows = gradient.detach().clone();
    }
    for (std::int64_t k = 0; k < clients; ++k) {
      if (cursors[k].shapes_steps) shape_step(round, step, jobs[k], gradient[k]);
    }
    if (pass.observed) {
      pass.observed->inputs = inputs.clone();
      pass.observed->labels = labels.clone();
    }
    // Summed where the losses are (no device-to-host copy per step), in double.
    loss_sums = loss_sums.defined() ? loss_sums.add_(step_losses.detach().to(torch::kDouble))
                                    : step_losses.detach().to(torch::kDouble);
    // torch.optim.SGD's arithmetic (add_ with alpha), in place: a stacked Θ [K, d] outgrows the
    // cache, and every extra pass over it costs as much as a small layer. In fedsgd mode the
    // upload is this regularised gradient, ∇ℓ + λθ: weight decay applies in both modes.
    torch::NoGradGuard no_grad;
    if (sign_penalty > 0) gradient.add_(torch::sign(local - theta), sign_penalty);
    if (c.weight_decay > 0) gradient.add_(local, c.weight_decay);
    if (fedsgd) {
      for (std::int64_t k = 0; k < clients; ++k) jobs[k].row.copy_(gradient[k]);
      break;
    }
    if (c.momentum > 0) {
      velocity = velocity.defined() ? velocity.mul_(c.momentum).add_(gradient) : gradient.clone();
      gradient = velocity;
    }
    local.sub_(gradient, lr);
  }

  torch::NoGradGuard no_grad;
  if (loss_sums.defined()) {
    const auto sums = loss_sums.cpu();
    for (std::int64_t k = 0; k < clients; ++k) losses[k] = sums.data_ptr<double>()[k];
  }
  for (std::int64_t k = 0; k < clients; ++k) {
    const auto& job = jobs[k];
    auto row = job.row;  // a handle on the same storage, for the hook's non-const reference
    if (!fedsgd) row.copy_(local[k] - theta);
    if (mechanism && mechanism->on_client_update()) {
      ClientUpdateContext context{round, settings_.rounds, job.client, cursors[k].n, &model_.layout(), cursors[k].privacy};
      call_plugin(privacy.label, "privatize_update", [&] { mechanism->privatize_update(row, context); });
    }
    losses[k] /= static_cast<double>(fedsgd ? 1 : steps);
  }
  return losses;
}

void LocalTrainer::poison_batch(std::int64_t round, const LocalJob& job, at::Generator& generator,
                                torch::Tensor inputs, torch::Tensor labels) const {
  const auto& attack = plugins_.attacks[job.attack_index];
  DataAttackContext context{round, job.client, data_.num_classes, generator};
  auto poisoned_inputs = inputs, poisoned_labels = labels;  // the hook may also hand back new tensors
  call_plugin(attack.label, "poison_batch", [&] { attack->poison_batch(poisoned_inputs, poisoned_labels, context); });
  if (poisoned_inputs.sizes() != inputs.sizes() || poisoned_labels.sizes() != labels.sizes()) {
    throw Error(ErrorKind::Runtime, attack.label + " changed the size of a batch in poison_batch; rewrite it in place");
  }
  if (!poisoned_inputs.is_same(inputs)) inputs.copy_(poisoned_inputs);
  if (!poisoned_labels.is_same(labels)) labels.copy_(poisoned_labels);
}

void LocalTrainer::shape_step(std::int64_t round, std::int64_t step, const LocalJob& job, torch::Tensor gradient) const {
  const auto& attack = plugins_.attacks[job.attack_index];
  StepAttackContext context{round, job.client, step};
  auto shaped = gradient;  // the hook may also hand back a new tensor
  call_plugin(attack.label, "shape_step", [&] { attack->shape_step(shaped, context); });
  if (shaped.sizes() != gradient.sizes()) {
    throw Error(ErrorKind::Runtime, attack.label + " changed the size of a gradient in shape_step; rewrite it in place");
  }
  if (!shaped.is_same(gradient)) gradient.copy_(shaped);
}

}  // namespace bulwark
