#include "cluster.hpp"

#include <c10/util/Exception.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "config.hpp"

#if BULWARK_WITH_MPI
#include <mpi.h>
#endif

namespace bulwark::cluster {

namespace {

// At most this many bytes per rank in one MPI call: counts stay far inside int.
constexpr std::size_t kChunkBytes = std::size_t{1} << 28;
constexpr int kLengthTag = 21;  // gather(): a rank's message length (the task queue uses 11, 12)

int world_rank = 0, world_size = 1, node_size = 1;
#if BULWARK_WITH_MPI
constexpr bool kBuiltWithMpi = true;
#else
constexpr bool kBuiltWithMpi = false;
#endif

int launched_copies = 1, launched_rank = 0;  // what mpirun or srun says, for check_launch()

#if BULWARK_WITH_MPI
bool started = false;

// The fault message, composed ahead of time (a signal handler may only write bytes): two buffers,
// the handler reads the one `shown` points at while the other is being rewritten.
std::array<std::array<char, 4096>, 2> fault_text{};
std::atomic<int> shown{0};
std::string fault_note, awaited_ranks;

void compose_fault_text() {
  std::string text = "error: the job was ended by its launcher (a rank died, or the job was cancelled; mpirun's "
                     "message says which)";
  if (!awaited_ranks.empty()) text += "; rank 0 was waiting for the reply of rank " + awaited_ranks;
  if (!fault_note.empty()) text += "; " + fault_note;
  text += "\n";
  auto& buffer = fault_text[1 - shown.load()];
  const auto length = std::min(text.size(), buffer.size() - 1);
  std::memcpy(buffer.data(), text.data(), length);
  buffer[length] = '\0';
  shown.store(1 - shown.load());
}

extern "C" void say_fault_and_end(int signal_number) {
  const char* text = fault_text[shown.load()].data();
  [[maybe_unused]] auto written = ::write(STDERR_FILENO, text, std::strlen(text));
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

/// Launched by Open MPI's mpirun, by Slurm's srun (PMIx or PMI2), or by another PMIx launcher.
bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(name)) return true;
  }
  return false;
}
#endif

}  // namespace

void init(int& argc, char**& argv) {
  // What the launcher put in the environment says how many copies it started, MPI or not.
  const auto number = [](std::initializer_list<const char*> names, int fallback) {
    for (const char* name : names) {
      if (const char* value = std::getenv(name)) return std::atoi(value);
    }
    return fallback;
  };
  launched_copies = number({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}, 1);
  launched_rank = number({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}, 0);
#if BULWARK_WITH_MPI
  if (!launched_by_mpi()) return;
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  started = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &node_size);
  MPI_Comm_free(&node);
  if (world_rank == 0 && world_size > 1) {
    compose_fault_text();
    std::signal(SIGTERM, say_fault_and_end);
  }
#else
  (void)argc;
  (void)argv;
#endif
}

void check_launch() {
  if (launched_copies <= 1 || world_size > 1) return;
  const auto message =
      kBuiltWithMpi
          ? fmt::format("{} copies were started without an MPI connection between them (srun without PMIx?); "
                        "each would run the whole experiment into the same folder. Use srun --mpi=pmix (or "
                        "MpiDefault=pmix in slurm.conf), or mpirun",
                        launched_copies)
          : fmt::format("this bulwark was built without MPI, but a launcher started {} copies of it; each would "
                        "run the whole experiment into the same folder. Install libopenmpi-dev and openmpi-bin "
                        "and rebuild (CMake then turns BULWARK_WITH_MPI on), or run it as one process",
                        launched_copies);
  if (launched_rank != 0) throw ReportedByRank0(ErrorKind::Config, message);
  throw Error(ErrorKind::Config, message);
}

void finalize() {
#if BULWARK_WITH_MPI
  if (started) MPI_Finalize();
  started = false;
#endif
}

int rank() { return world_rank; }
int size() { return world_size; }
int local_size() { return node_size; }

void broadcast(std::string& bytes) {
#if BULWARK_WITH_MPI
  if (world_size == 1) return;
  std::uint64_t length = bytes.size();
  MPI_Bcast(&length, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  bytes.resize(length);
  for (std::size_t at = 0; at < length; at += kChunkBytes) {
    const auto count = static_cast<int>(std::min(kChunkBytes, length - at));
    MPI_Bcast(bytes.data() + at, count, MPI_BYTE, 0, MPI_COMM_WORLD);
  }
#else
  (void)bytes;
#endif
}

std::vector<std::string> gather(const std::string& bytes) {
#if BULWARK_WITH_MPI
  if (world_size == 1) return {bytes};
  // Lengths come point to point, so that rank 0 knows whose reply it is still waiting for (the
  // fault message names them); the bytes then move with MPI_Gatherv.
  std::uint64_t length = bytes.size();
  std::vector<std::uint64_t> lengths(world_rank == 0 ? world_size : 0);
  if (world_rank == 0) {
    lengths[0] = length;
    std::vector<MPI_Request> requests(world_size - 1);
    for (int r = 1; r < world_size; ++r) {
      MPI_Irecv(&lengths[r], 1, MPI_UINT64_T, r, kLengthTag, MPI_COMM_WORLD, &requests[r - 1]);
    }
    std::vector<bool> arrived(world_size, false);
    for (int left = world_size - 1; left > 0; --left) {
      awaited_ranks.clear();
      for (int r = 1; r < world_size; ++r) {
        if (!arrived[r]) awaited_ranks += (awaited_ranks.empty() ? "" : ", ") + std::to_string(r);
      }
      compose_fault_text();
      int index = 0;
      MPI_Waitany(world_size - 1, requests.data(), &index, MPI_STATUS_IGNORE);
      arrived[index + 1] = true;
    }
    awaited_ranks.clear();
    compose_fault_text();
  } else {
    MPI_Send(&length, 1, MPI_UINT64_T, 0, kLengthTag, MPI_COMM_WORLD);
  }
  std::vector<std::string> all(world_rank == 0 ? world_size : 0);
  for (int r = 0; r < static_cast<int>(all.size()); ++r) all[r].resize(lengths[r]);
  // Chunk k moves bytes [k·C, (k+1)·C) of every rank's message; the number of chunks follows the
  // longest message, which rank 0 announces.
  std::uint64_t longest = world_rank == 0 ? *std::max_element(lengths.begin(), lengths.end()) : 0;
  MPI_Bcast(&longest, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  std::vector<char> received;
  std::vector<int> counts(all.size()), offsets(all.size());
  const std::uint64_t chunks = std::max<std::uint64_t>(1, (longest + kChunkBytes - 1) / kChunkBytes);
  for (std::uint64_t chunk = 0; chunk < chunks; ++chunk) {
    const std::size_t at = chunk * kChunkBytes;
    const auto piece = [&](std::uint64_t total) { return static_cast<int>(at < total ? std::min(kChunkBytes, total - at) : 0); };
    if (world_rank == 0) {
      int offset = 0;
      for (int r = 0; r < world_size; ++r) {
        counts[r] = piece(lengths[r]);
        offsets[r] = offset;
        offset += counts[r];
      }
      received.resize(static_cast<std::size_t>(offset));
    }
    MPI_Gatherv(bytes.data() + std::min<std::size_t>(at, bytes.size()), piece(length), MPI_BYTE, received.data(),
                counts.data(), offsets.data(), MPI_BYTE, 0, MPI_COMM_WORLD);
    for (int r = 0; r < static_cast<int>(all.size()); ++r) {
      std::copy_n(received.data() + offsets[r], counts[r], all[r].data() + at);
    }
  }
  return all;
#else
  return {bytes};
#endif
}

// A message is its length, then its bytes in chunks, all with one tag: MPI keeps the messages of
// one sender and tag in order, so the chunks of two messages never interleave.
void send(int to, int tag, const std::string& bytes) {
#if BULWARK_WITH_MPI
  std::uint64_t length = bytes.size();
  MPI_Send(&length, 1, MPI_UINT64_T, to, tag, MPI_COMM_WORLD);
  for (std::size_t at = 0; at < length; at += kChunkBytes) {
    const auto count = static_cast<int>(std::min(kChunkBytes, length - at));
    MPI_Send(bytes.data() + at, count, MPI_BYTE, to, tag, MPI_COMM_WORLD);
  }
#else
  (void)to, (void)tag, (void)bytes;
  throw Error(ErrorKind::Runtime, "cluster::send in a world of one");
#endif
}

std::string receive(int from, int tag) {
#if BULWARK_WITH_MPI
  std::uint64_t length = 0;
  MPI_Recv(&length, 1, MPI_UINT64_T, from, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  std::string bytes(length, '\0');
  for (std::size_t at = 0; at < length; at += kChunkBytes) {
    const auto count = static_cast<int>(std::min(kChunkBytes, length - at));
    MPI_Recv(bytes.data() + at, count, MPI_BYTE, from, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  return bytes;
#else
  (void)from, (void)tag;
  throw Error(ErrorKind::Runtime, "cluster::receive in a world of one");
#endif
}

Message poll(int tag) {
  Message message;
#if BULWARK_WITH_MPI
  int waiting = 0;
  MPI_Status status;
  MPI_Iprobe(MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, &waiting, &status);
  if (waiting) {
    message.from = status.MPI_SOURCE;
    message.bytes = receive(message.from, tag);
  }
#else
  (void)tag;
#endif
  return message;
}

std::string describe_failure(std::exception_ptr failure) {
  if (!failure) return "";
  nlohmann::json out = {{"kind", static_cast<int>(ErrorKind::Runtime)}, {"location", ""}};
  try {
    std::rethrow_exception(failure);
  } catch (const LocatedError& e) {
    out["kind"] = static_cast<int>(e.kind());
    out["location"] = e.location();
    out["message"] = e.message();
  } catch (const Error& e) {
    out["kind"] = static_cast<int>(e.kind());
    out["message"] = e.what();
  } catch (const c10::Error& e) {
    out["message"] = e.what_without_backtrace();
  } catch (const std::exception& e) {
    out["message"] = e.what();
  } catch (...) {
    out["message"] = "an unknown exception";
  }
  return out.dump();
}

void rethrow_failure(const std::string& report, int from_rank) {
  const auto failure = nlohmann::json::parse(report);
  const auto kind = static_cast<ErrorKind>(failure.at("kind").get<int>());
  const auto location = failure.at("location").get<std::string>();
  auto message = failure.at("message").get<std::string>();
  if (from_rank > 0) message += " (on rank " + std::to_string(from_rank) + ")";
  if (!location.empty()) throw LocatedError(kind, location, message);
  throw Error(kind, message);
}

void agree(std::exception_ptr failure) {
  if (world_size == 1) {
    if (failure) std::rethrow_exception(failure);
    return;
  }
  const auto reports = gather(describe_failure(failure));
  std::string verdict;  // "<rank> <report>" of the lowest failing rank, or empty
  for (int r = 0; r < static_cast<int>(reports.size()) && verdict.empty(); ++r) {
    if (!reports[r].empty()) verdict = std::to_string(r) + " " + reports[r];
  }
  broadcast(verdict);
  if (verdict.empty()) return;
  const auto space = verdict.find(' ');
  if (world_rank != 0) throw ReportedByRank0(ErrorKind::Runtime, "reported by rank 0");
  if (failure) std::rethrow_exception(failure);  // rank 0's own error, as it was
  rethrow_failure(verdict.substr(space + 1), std::stoi(verdict.substr(0, space)));
}

void clear_fault_note() {
#if BULWARK_WITH_MPI
  if (world_rank == 0 && world_size > 1) std::signal(SIGTERM, SIG_DFL);
#endif
}

void set_fault_note(const std::string& note) {
#if BULWARK_WITH_MPI
  if (world_rank != 0 || world_size == 1) return;
  fault_note = note;
  compose_fault_text();
#else
  (void)note;
#endif
}

}  // namespace bulwark::cluster
