// Process tuning (runtime.hpp): threads, heap, BLAS kernels, and the CUDA settings behind
// reproducible GPU runs (docs/performance.md).
#include "runtime.hpp"

#include <dlfcn.h>
#include <malloc.h>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "cluster.hpp"
#include "config.hpp"

namespace bulwark {

namespace {

// OpenBLAS picks its kernels by CPU model, and Debian's 0.3.21 falls back to its SSE3 "Prescott"
// kernels on models newer than itself (a Xeon of model 207 with AVX-512 gets them): GEMMs run
// 2-3x slower. On that fallback, switch to the kernels the instruction set allows, through
// OpenBLAS's own entry points, before any BLAS call. A user's OPENBLAS_CORETYPE is kept.
void choose_blas_kernels() {
  using CoreName = char* (*)();
  using Init = void (*)();
  auto core_name = reinterpret_cast<CoreName>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  auto quit = reinterpret_cast<Init>(::dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  auto init = reinterpret_cast<Init>(::dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  if (!core_name || !quit || !init || std::getenv("OPENBLAS_CORETYPE")) return;
  if (std::string(core_name()) != "Prescott") return;
  const char* kernels = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    kernels = "SkylakeX";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    kernels = "Haswell";
  }
  if (!kernels) return;
  // OpenBLAS reads the choice from its variable; the environment is the user's again afterwards.
  ::setenv("OPENBLAS_CORETYPE", kernels, /*overwrite=*/1);
  quit();
  init();
  ::unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace

void init_runtime() {
  // Keep freed tensor memory in the heap for the next step. Above glibc's mmap threshold every
  // allocation is a fresh mapping whose first-touch page faults cost more than the arithmetic on
  // it (a client-batched MLP step: 1.5x slower), and trimming the heap top does the same to
  // smaller ones. 32 MiB is glibc's largest threshold; larger buffers are reused where they are
  // made (models.cpp).
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
  at::set_num_threads(1);
  using SetThreads = void (*)(int);
  if (auto set_blas_threads = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set_blas_threads(1);
  }
  choose_blas_kernels();
}

void init_cuda_runtime() {
  // cuBLAS is deterministic only with a fixed workspace configuration, read when its first handle
  // is made; a user's own setting is kept.
  ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  auto& context = at::globalContext();
  // warn_only: an operation without a deterministic CUDA kernel warns once instead of failing the
  // run. The one the zoo reaches, max_pool2d's backward, adds with atomics, but its 2x2 stride-2
  // windows never share an input, so every sum has one term and the result is exact
  // (tests/core/device_test.cpp repeats a CUDA run and compares it bit for bit).
  context.setDeterministicAlgorithms(true, /*warn_only=*/true);
  context.setDeterministicCuDNN(true);
  context.setBenchmarkCuDNN(false);
  context.setAllowTF32CuBLAS(false);
  context.setAllowTF32CuDNN(false);
}

int default_threads() {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / cluster::local_size());
}

c10::Device resolve_device(const std::string& name, const std::string& file) {
  if (name == "cpu") return c10::kCPU;
  if (!torch::cuda::is_available()) {
    const bool sees_no_gpu = torch::cuda::device_count() == 0 && at::hasCUDA();
    config_error(file, std::string("[experiment] device = \"cuda\", but this LibTorch ") +
                           (sees_no_gpu ? "sees no GPU" : "was built without CUDA") +
                           "; set device = \"cpu\", or build against a CUDA LibTorch (docs/performance.md, \"On a GPU\")");
  }
  init_cuda_runtime();
  return c10::Device(c10::kCUDA, 0);
}

}  // namespace bulwark
