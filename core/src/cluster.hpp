#pragma once

// The processes of one `mpirun` (or `srun`) job (docs/distributed.md). Built with Open MPI
// (BULWARK_WITH_MPI) and started by a launcher, the job has one rank per process; otherwise it
// is a world of one and every call below is trivial, so no caller needs an #if.
//
// Messages are byte strings (a round's work and a rank's rows travel as encode_checkpoint()
// bytes), moved in chunks so that no count exceeds MPI's int range whatever d is.
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "bulwark/error.hpp"

namespace bulwark {

namespace cluster {

/// Starts MPI when the process was launched by mpirun/srun (MPI_THREAD_FUNNELED: only the main
/// thread communicates); call first in main(). `finalize` ends it; an RAII Session does both.
void init(int& argc, char**& argv);
void finalize();

struct Session {
  Session(int& argc, char**& argv) { init(argc, argv); }
  ~Session() { finalize(); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
};

int rank();
int size();
/// The ranks of this job on this node (1 without MPI).
int local_size();
inline bool distributed() { return size() > 1; }

/// What ranks other than 0 throw for a failure rank 0 reports: main() neither prints it nor
/// exits non-zero for it (rank 0 exits with the code; the launcher must not end rank 0 first).
class ReportedByRank0 : public Error {
 public:
  using Error::Error;
};

/// Throws Error(Config) (ReportedByRank0 off the first process) when a launcher started several
/// copies that are not connected by MPI (a build without MPI, or srun without PMIx): each copy
/// would run the whole experiment into the same folder.
void check_launch();

/// Rank 0's `bytes` on every rank.
void broadcast(std::string& bytes);

/// Every rank's `bytes`, in rank order, on rank 0 (other ranks get an empty list).
std::vector<std::string> gather(const std::string& bytes);

/// Point to point, for work handed out as ranks ask for it (a study's cells): `send` blocks
/// until `bytes` left; `receive` waits for the next message with `tag` from `from`;
/// `poll` returns at once, with the next message with `tag` from any rank if one is waiting.
struct Message {
  int from = -1;  ///< -1: nothing was waiting
  std::string bytes;
};
void send(int to, int tag, const std::string& bytes);
std::string receive(int from, int tag);
Message poll(int tag);

/// A collective check: every rank passes what it caught (or null). When any rank failed, every
/// rank throws: rank 0 the failure of the lowest failing rank (its own error as it was, another
/// rank's with "(on rank k)" added, keeping kind and location), the others ReportedByRank0, so a
/// failure is reported once.
void agree(std::exception_ptr failure);

/// `failure` as text another rank can rethrow (its kind, location and message); "" for none.
std::string describe_failure(std::exception_ptr failure);
/// Throws what describe_failure() wrote on rank `from_rank`, with "(on rank k)" added for k > 0.
[[noreturn]] void rethrow_failure(const std::string& report, int from_rank);

/// Rank 0 of a job of several ranks: what it prints when the launcher ends the job (mpirun
/// sends SIGTERM to every rank when one dies): `note` says where the run stood and how to go on,
/// and the ranks rank 0 was waiting for in gather() are named. Set it again as the run moves.
void set_fault_note(const std::string& note);

/// Rank 0, about to report an error of its own: the launcher may now end the job without the
/// fault message (the error says what happened).
void clear_fault_note();

}  // namespace cluster

}  // namespace bulwark
