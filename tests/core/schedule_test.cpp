// The Byzantine schedules (schedule.hpp): counts, start round, Markov spells of exactly k rounds,
// disjoint sets for several attacks, and reproducibility from the seed.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "bulwark/error.hpp"
#include "schedule.hpp"

using namespace bulwark;

namespace {

ScheduleSpec spec(const std::string& kind, std::int64_t count, double fraction = 0.0, std::int64_t start = 1) {
  ScheduleSpec s;
  s.label = "attack 'test'";
  s.kind = kind;
  s.count = count;
  s.fraction = fraction;
  s.start_round = start;
  return s;
}

std::vector<std::int64_t> everyone(std::int64_t k) {
  std::vector<std::int64_t> all(k);
  std::iota(all.begin(), all.end(), 0);
  return all;
}

/// Participant ids whose row is owned by attack `a`.
std::set<std::int64_t> owned(const std::vector<int>& owner, const std::vector<std::int64_t>& participants, int a = 0) {
  std::set<std::int64_t> ids;
  for (std::size_t i = 0; i < owner.size(); ++i) {
    if (owner[i] == a) ids.insert(participants[i]);
  }
  return ids;
}

}  // namespace

TEST_CASE("fixed: the same byzantine clients every round, from the start round on") {
  ByzantineSchedule schedule({spec("fixed", 5, 0.0, /*start=*/4)}, /*num_clients=*/20, /*seed=*/3);
  const auto all = everyone(20);
  const auto& chosen = schedule.eligible(0);
  CHECK(chosen.size() == 5);
  for (std::int64_t round = 1; round <= 3; ++round) {
    CHECK(owned(schedule.malicious(round, all), all).empty());  // before start_round = 4
  }
  for (std::int64_t round = 4; round <= 10; ++round) {
    CHECK(owned(schedule.malicious(round, all), all) == std::set<std::int64_t>(chosen.begin(), chosen.end()));
  }
  // A round that samples 8 clients: exactly the sampled members of the fixed set are malicious.
  std::vector<std::int64_t> sampled = {0, 2, 4, 6, 8, 10, 12, 14};
  std::set<std::int64_t> expected;
  for (auto c : sampled) {
    if (std::binary_search(chosen.begin(), chosen.end(), c)) expected.insert(c);
  }
  CHECK(owned(schedule.malicious(5, sampled), sampled) == expected);
}

TEST_CASE("byzantine_fraction: of K for fixed, of the round's participants for per_round") {
  ByzantineSchedule fixed({spec("fixed", 0, 0.25)}, 20, 1);
  CHECK(fixed.eligible(0).size() == 5);  // round(0.25 * 20)
  ByzantineSchedule fresh({spec("per_round", 0, 0.3)}, 20, 1);
  std::vector<std::int64_t> sampled = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19};
  std::set<std::set<std::int64_t>> sets;
  for (std::int64_t round = 1; round <= 10; ++round) {
    auto ids = owned(fresh.malicious(round, sampled), sampled);
    CHECK(ids.size() == 3);  // round(0.3 * 10)
    for (auto c : ids) CHECK(std::find(sampled.begin(), sampled.end(), c) != sampled.end());
    sets.insert(ids);
  }
  CHECK(sets.size() > 1);  // a fresh set each round, not the same one
  ByzantineSchedule counted({spec("per_round", 4)}, 20, 1);
  CHECK(owned(counted.malicious(1, sampled), sampled).size() == 4);
  CHECK(owned(counted.malicious(2, {0, 1, 2}), {0, 1, 2}).size() == 3);  // capped by the round's size
}

TEST_CASE("markov: every malicious spell lasts exactly k rounds, then at least one benign round") {
  auto markov = spec("markov", 0, 0.0, /*start=*/5);
  markov.markov_p = 0.3;
  markov.markov_k = 3;
  const std::int64_t clients = 40, rounds = 60;
  ByzantineSchedule schedule({markov}, clients, 9);
  CHECK(schedule.eligible(0).size() == clients);  // no byzantine count: every client eligible
  const auto all = everyone(clients);
  std::vector<std::vector<bool>> bad(clients, std::vector<bool>(rounds + 1, false));
  for (std::int64_t round = 1; round <= rounds; ++round) {
    auto owner = schedule.malicious(round, all);
    for (std::int64_t c = 0; c < clients; ++c) bad[c][round] = owner[c] == 0;
  }
  std::int64_t spells = 0, benign_rounds = 0, turns = 0;
  for (std::int64_t c = 0; c < clients; ++c) {
    for (std::int64_t round = 1; round < 5; ++round) CHECK_FALSE(bad[c][round]);  // start_round = 5
    std::int64_t length = 0;
    for (std::int64_t round = 5; round <= rounds; ++round) {
      if (bad[c][round]) {
        ++length;
        continue;
      }
      if (length > 0) {
        INFO("client " << c << " spell ending before round " << round);
        CHECK(length == 3);
        ++spells;
      }
      length = 0;
    }
    CHECK(length <= 3);  // a spell cut by the end of the run is never longer than k
    // Turning rate: after any benign round (round 4 included: chains start benign before the
    // start round) the next round is the first of a spell with probability p.
    for (std::int64_t round = 4; round < rounds; ++round) {
      if (bad[c][round]) continue;
      ++benign_rounds;
      turns += bad[c][round + 1];
    }
  }
  CHECK(spells > 100);
  // 0.3 expected; the count is binomial over ~1000 benign rounds (sd ~ 0.015).
  const double rate = static_cast<double>(turns) / static_cast<double>(benign_rounds);
  CHECK(rate > 0.22);
  CHECK(rate < 0.38);
}

TEST_CASE("markov with a byzantine count draws spells only inside a fixed pool") {
  auto markov = spec("markov", 6);
  markov.markov_p = 0.5;
  markov.markov_k = 2;
  ByzantineSchedule schedule({markov}, 30, 4);
  const auto& pool = schedule.eligible(0);
  REQUIRE(pool.size() == 6);
  const auto all = everyone(30);
  std::set<std::int64_t> ever;
  for (std::int64_t round = 1; round <= 20; ++round) {
    auto ids = owned(schedule.malicious(round, all), all);
    ever.insert(ids.begin(), ids.end());
  }
  CHECK(ever == std::set<std::int64_t>(pool.begin(), pool.end()));  // all of the pool, nobody else
}

TEST_CASE("the schedule is a function of the seed and the round, whatever the order of queries") {
  auto markov = spec("markov", 0);
  markov.markov_p = 0.2;
  markov.markov_k = 4;
  const std::vector<ScheduleSpec> specs = {spec("fixed", 3), spec("per_round", 2), markov};
  const auto all = everyone(25);
  ByzantineSchedule forward(specs, 25, 77), backward(specs, 25, 77), other(specs, 25, 78);
  std::vector<std::vector<int>> seen(31);
  for (std::int64_t round = 1; round <= 30; ++round) seen[round] = forward.malicious(round, all);
  bool differs = false;
  for (std::int64_t round = 30; round >= 1; --round) {
    CHECK(backward.malicious(round, all) == seen[round]);  // replayed from the start: same answer
    differs = differs || other.malicious(round, all) != seen[round];
  }
  CHECK(differs);  // another seed, another schedule
  CHECK(forward.malicious(7, all) == seen[7]);  // asking again for an earlier round
}

TEST_CASE("several attacks: disjoint client sets, each of its own size") {
  const std::vector<ScheduleSpec> specs = {spec("fixed", 3), spec("fixed", 4), spec("per_round", 2)};
  ByzantineSchedule schedule(specs, 12, 5);
  std::set<std::int64_t> first(schedule.eligible(0).begin(), schedule.eligible(0).end());
  std::set<std::int64_t> second(schedule.eligible(1).begin(), schedule.eligible(1).end());
  CHECK(first.size() == 3);
  CHECK(second.size() == 4);
  for (auto c : first) CHECK(second.count(c) == 0);
  const auto all = everyone(12);
  for (std::int64_t round = 1; round <= 5; ++round) {
    auto owner = schedule.malicious(round, all);
    CHECK(owned(owner, all, 0) == first);
    CHECK(owned(owner, all, 1) == second);
    auto third = owned(owner, all, 2);
    CHECK(third.size() == 2);  // per_round picks among the rows the fixed attacks left free
    for (auto c : third) CHECK((first.count(c) == 0 && second.count(c) == 0));
  }
}

TEST_CASE("fixed sets larger than the population are a configuration error") {
  CHECK_THROWS_WITH_AS(ByzantineSchedule({spec("fixed", 8), spec("fixed", 5)}, 12, 1),
                       doctest::Contains("only 4 of clients.count = 12 are left"), Error);
}

TEST_CASE("pool_class: fixed sets and markov pools only among clients holding the label, still disjoint") {
  // Client c holds label 4 when c is even.
  const auto holds = [](std::int64_t client, std::int64_t label) { return label == 4 && client % 2 == 0; };
  auto restricted = [](ScheduleSpec s) {
    s.pool_class = 4;
    return s;
  };
  auto markov = restricted(spec("markov", 0));
  ByzantineSchedule schedule({restricted(spec("fixed", 3)), spec("fixed", 4), markov}, 12, 5, holds);
  for (auto c : schedule.eligible(0)) CHECK(c % 2 == 0);
  CHECK(schedule.eligible(0).size() == 3);
  CHECK(schedule.eligible(2) == std::vector<std::int64_t>{0, 2, 4, 6, 8, 10});  // a markov pool of every holder
  for (auto c : schedule.eligible(1)) {
    CHECK(std::find(schedule.eligible(0).begin(), schedule.eligible(0).end(), c) == schedule.eligible(0).end());
  }
  CHECK_THROWS_WITH_AS(ByzantineSchedule({restricted(spec("fixed", 7))}, 12, 5, holds),
                       doctest::Contains("asks for 7 malicious clients but only 6 of clients.count = 12 holding label 4"),
                       Error);
  CHECK_THROWS_WITH_AS(ByzantineSchedule({restricted(spec("per_round", 2))}, 12, 5, holds),
                       doctest::Contains("pool_class restricts the clients of a fixed set or markov pool"), Error);
  // Without pool_class the sets are what they were: consecutive slices of one permutation.
  ByzantineSchedule plain({spec("fixed", 3), spec("fixed", 4)}, 12, 5);
  ByzantineSchedule plain_with_holds({spec("fixed", 3), spec("fixed", 4)}, 12, 5, holds);
  CHECK(plain.eligible(0) == plain_with_holds.eligible(0));
  CHECK(plain.eligible(1) == plain_with_holds.eligible(1));
}
