#pragma once

#include <string>

#include <c10/core/Device.h>

namespace bulwark {

/// Process-wide compute settings every program that runs the engine calls once, first thing in
/// main(): one LibTorch intra-op thread and one OpenBLAS thread per calling thread, and OpenBLAS
/// kernels that match the CPU when OpenBLAS does not know it. Parallelism comes from client
/// workers; this keeps 2 cores busy without oversubscription, keeps reductions bit-identical for
/// any worker count, and keeps concurrent GEMM calls safe (OpenBLAS's threaded build serialises
/// its buffers; its single-thread build races when two threads call it).
void init_runtime();

/// Worker threads for `threads = 0` ("all cores"): the cores of this node shared evenly among the
/// ranks of an MPI job that run on it, so `mpirun -np 2` on one machine does not oversubscribe it.
int default_threads();

/// Settings for runs on a CUDA device, applied before the first CUDA computation (the engine
/// calls it when [experiment] device = "cuda"): deterministic algorithms, cuDNN without autotuning,
/// and full fp32 precision (no TF32), so a run repeats bit for bit and follows the CPU run's
/// arithmetic to rounding. Idempotent.
void init_cuda_runtime();

/// The device of [experiment] device = `name` ("cpu" or "cuda", the first GPU), with the CUDA
/// settings applied; Error(Config) naming `file` when this LibTorch has no CUDA or sees no GPU.
c10::Device resolve_device(const std::string& name, const std::string& file);

}  // namespace bulwark
