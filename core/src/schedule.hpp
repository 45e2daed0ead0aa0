#pragma once

// Who is malicious, and when (docs/architecture.md, "A round": sample). One ByzantineSchedule serves every attack of
// an experiment, so that the attacks' client sets stay disjoint.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bulwark/options.hpp"

namespace bulwark {

/// One attack's schedule: the kernel keys of its [attack] table (schedule_option_specs()).
struct ScheduleSpec {
  std::string label;             ///< "attack 'sign_flip'", for messages
  std::string kind = "fixed";    ///< fixed | per_round | markov
  std::int64_t count = 0;        ///< `byzantine`
  double fraction = 0.0;         ///< `byzantine_fraction` (used when > 0)
  std::int64_t start_round = 1;  ///< first round in which the attack acts
  std::int64_t end_round = 0;    ///< last round in which it acts; 0: to the end of the run
  double markov_p = 0.0;         ///< markov: P(benign -> malicious) per round
  std::int64_t markov_k = 1;     ///< markov: rounds a client stays malicious once it turned
  std::int64_t pool_class = -1;  ///< fixed, markov: only clients holding this label (-1: any client)

  /// Reads a validated schedule table (byzantine, byzantine_fraction, schedule, start_round, end_round,
  /// markov_p, markov_k).
  static ScheduleSpec from_options(const Options& schedule, std::string label);
};

/// The Byzantine schedules of all attacks of a run.
///
/// - fixed: the attack controls the same `byzantine` clients (or round(byzantine_fraction · K))
///   for the whole run; they are malicious whenever they are sampled, from `start_round` on.
/// - per_round: each round from `start_round` on, a fresh uniformly random set of `byzantine`
///   (or round(byzantine_fraction · n)) of that round's n participants.
/// - markov: every eligible client is a Markov chain over the states B, M1..Mk (k = markov_k):
///   B -> M1 with probability p = markov_p, B -> B otherwise, Mi -> Mi+1, Mk -> B. A client is
///   malicious in the rounds it spends in M1..Mk, so every malicious spell lasts exactly k
///   consecutive rounds (unless the run ends first) and spells are separated by at least one
///   benign round. Chains start in B at round start_round − 1 and move every round, whether the
///   client is sampled or not. Eligible clients: a fixed random pool of `byzantine` clients (or
///   round(byzantine_fraction · K)), or every client when neither is given.
///
/// With `end_round` = e > 0, no client of the attack is malicious after round e (what is left of
/// its effect can then be watched, e.g. a backdoor's durability).
///
/// With `pool_class` = c, fixed sets and markov pools are drawn only among clients whose data
/// holds label c (DiverseFL's backdoor: only clients with class-4 examples can plant 4 → 9).
///
/// Fixed sets and markov pools of different attacks are disjoint (drawn from one permutation of
/// the K clients). Within a round, attacks claim rows in list order and a row belongs to at most
/// one attack.
///
/// Determinism: every draw comes from a stream of (seed, round, attack, Stream::Schedule), and the
/// markov chains are replayed from their start when a round earlier than the last one queried is
/// asked for, so malicious(r, ...) depends only on (seed, specs, K, r, participants), never on
/// the order of calls.
class ByzantineSchedule {
 public:
  ByzantineSchedule() = default;
  /// Whether a client's data holds a label: (client, label) -> bool. Without it (`bulwark
  /// validate`, before data is loaded) every client counts as holding every label.
  using HoldsLabel = std::function<bool(std::int64_t, std::int64_t)>;

  /// Throws Error(Config) when fixed sets and pools ask for more clients than K, or than hold
  /// their pool_class.
  ByzantineSchedule(std::vector<ScheduleSpec> attacks, std::int64_t num_clients, std::uint64_t seed,
                    const HoldsLabel& holds = {});

  /// The attack index controlling each participant of `round` (1-based), -1 for honest rows.
  /// `participants` are client ids in [0, K), one per row of the round's update matrix.
  std::vector<int> malicious(std::int64_t round, const std::vector<std::int64_t>& participants);

  /// Clients attack `a` may ever control: its fixed set or markov pool, sorted; empty for
  /// per_round (any participant).
  const std::vector<std::int64_t>& eligible(std::size_t a) const { return eligible_.at(a); }

  std::size_t size() const { return attacks_.size(); }

 private:
  /// Moves attack a's markov chains forward to `round`.
  void advance_markov(std::size_t a, std::int64_t round);

  std::vector<ScheduleSpec> attacks_;
  std::int64_t num_clients_ = 0;
  std::uint64_t seed_ = 0;
  std::vector<std::vector<std::int64_t>> eligible_;   // per attack, sorted client ids
  // markov: per attack, rounds of malicious spell left per eligible client, counting the round
  // the chain is in (0 = benign), and the round the chains are in.
  std::vector<std::vector<std::int64_t>> remaining_;
  std::vector<std::int64_t> markov_round_;
};

}  // namespace bulwark
