// tests/parallel/test_comm.cpp — parallel/: the MPI backend of Comm and the DP x TP grid, run
// under mpirun -np 2 and -np 4 (and as a world of one without mpirun). Every test is collective:
// all ranks run the same tests in the same order. Rank 0 prints gtest's report; other ranks
// print only their failures, tagged with their rank; the exit code is non-zero on every rank
// when any rank failed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "parallel/comm.h"
#include "parallel/grid.h"
#include "runtime/core/check.h"

using namespace secateur;
using namespace secateur::parallel;
using ::testing::HasSubstr;

namespace {

Grid* g_grid = nullptr;   // tp = 1; tests that need another layout make their own grid

Comm& world() { return g_grid->world(); }

// The message of the secateur::Error that fn throws ("" when it does not throw).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const secateur::Error& e) {
    return e.what();
  }
  return "";
}

// [2, 3] with element j = (rank + 1) * (j + 1): sums, means, minima and maxima are exact in
// every tested dtype for worlds up to 4.
at::Tensor ramp(int rank, at::ScalarType dtype) {
  return (at::arange(1, 7, at::kDouble) * (rank + 1)).view({2, 3}).to(dtype);
}

std::vector<int64_t> gathered_ranks(Comm& c) {
  at::Tensor me = at::full({1}, static_cast<int64_t>(g_grid->rank()), at::TensorOptions(at::kLong));
  at::Tensor all = c.all_gather(me);
  return std::vector<int64_t>(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel());
}

}  // namespace

TEST(Comm, AllReduceSumAvgMinMaxInEveryDtype) {
  const int n = world().size(), r = world().rank();
  const at::Tensor j = at::arange(1, 7, at::kDouble).view({2, 3});
  const double s = n * (n + 1) / 2.0;
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kLong, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    struct Case { ReduceOp op; at::Tensor expect; };
    std::vector<Case> cases = {{ReduceOp::sum, j * s}, {ReduceOp::min, j * 1.0}, {ReduceOp::max, j * n}};
    if (at::isFloatingType(dtype)) cases.push_back({ReduceOp::avg, j * (s / n)});
    for (const Case& c : cases) {
      SCOPED_TRACE(to_string(c.op));
      at::Tensor t = ramp(r, dtype);
      world().all_reduce(t, c.op);
      EXPECT_EQ(t.scalar_type(), dtype);
      EXPECT_TRUE(at::equal(t.to(at::kDouble), c.expect)) << t;
    }
  }
}

TEST(Comm, AllReduceSmallIntegerTypesAndFloat16) {
  const int n = world().size();
  at::Tensor u8 = at::full({5}, 2, at::TensorOptions(at::kByte));
  world().all_reduce(u8, ReduceOp::sum);
  EXPECT_TRUE(at::equal(u8, at::full({5}, 2 * n, at::TensorOptions(at::kByte))));
  at::Tensor i32 = at::full({3}, world().rank(), at::TensorOptions(at::kInt));
  world().all_reduce(i32, ReduceOp::max);
  EXPECT_TRUE(at::equal(i32, at::full({3}, n - 1, at::TensorOptions(at::kInt))));
  at::Tensor f16 = at::full({4}, 0.5, at::TensorOptions(at::kHalf));
  world().all_reduce(f16, ReduceOp::avg);
  EXPECT_TRUE(at::equal(f16, at::full({4}, 0.5, at::TensorOptions(at::kHalf))));
}

TEST(Comm, AverageOfIntegersIsRejected) {
  at::Tensor t = at::ones({3}, at::TensorOptions(at::kLong));
  EXPECT_THAT(error_of([&] { world().all_reduce(t, ReduceOp::avg); }), HasSubstr("floating dtypes only"));
}

TEST(Comm, ScalarAndHashHelpers) {
  const int n = world().size(), r = world().rank();
  EXPECT_DOUBLE_EQ(world().all_reduce_scalar(r + 0.5, ReduceOp::sum), n * (n - 1) / 2.0 + 0.5 * n);
  EXPECT_DOUBLE_EQ(world().all_reduce_scalar(r, ReduceOp::max), n - 1);
  EXPECT_EQ(world().all_reduce_int(r, ReduceOp::min), 0);
  // Above 2^63: unsigned order, not signed.
  const uint64_t top = ~uint64_t{0};
  EXPECT_EQ(world().all_reduce_min(top - r), top - (n - 1));
  EXPECT_EQ(world().all_reduce_max(top - r), top);
  EXPECT_EQ(world().all_reduce_min(static_cast<uint64_t>(r)), 0u);
  // The decision-hash check: equal hashes agree, one differing rank shows up as min != max.
  EXPECT_EQ(world().all_reduce_min(0xabcdefull), world().all_reduce_max(0xabcdefull));
  if (n > 1) {
    const uint64_t h = r == n - 1 ? 2 : 1;
    EXPECT_NE(world().all_reduce_min(h), world().all_reduce_max(h));
  }
}

TEST(Comm, AllGatherConcatenatesOnDimZeroInRankOrder) {
  const int n = world().size(), r = world().rank();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
    at::Tensor out = world().all_gather(at::full({2, 3}, r, at::TensorOptions(dtype)));
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2 * n, 3}));
    EXPECT_EQ(out.scalar_type(), dtype);
    for (int q = 0; q < n; ++q) EXPECT_TRUE(at::equal(out.narrow(0, 2 * q, 2), at::full({2, 3}, q, at::TensorOptions(dtype))));
  }
  const at::Tensor scalars = world().all_gather(at::scalar_tensor(r * 2.0, at::kDouble));   // 0-dim gathers as [1]
  EXPECT_TRUE(at::equal(scalars, at::arange(0, n, at::kDouble) * 2));
}

TEST(Comm, AllGatherVTakesUnevenAndEmptyShards) {
  const int n = world().size(), r = world().rank();
  // rank q holds q % 3 rows (rank 0 and 3 none), row i of rank q = 100 q + i in every column.
  auto rows_of = [](int q) { return static_cast<int64_t>(q % 3); };
  const at::Tensor mine =
      (at::arange(rows_of(r), at::kFloat) + 100 * r).view({rows_of(r), 1}).expand({rows_of(r), 4}).contiguous();
  std::vector<int64_t> sizes;
  const at::Tensor out = world().all_gather_v(mine, &sizes);
  int64_t total = 0;
  std::vector<at::Tensor> expect;
  for (int q = 0; q < n; ++q) {
    EXPECT_EQ(sizes.at(q), rows_of(q));
    total += rows_of(q);
    expect.push_back((at::arange(rows_of(q), at::kFloat) + 100 * q).view({rows_of(q), 1}).expand({rows_of(q), 4}));
  }
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{total, 4}));
  EXPECT_TRUE(at::equal(out, at::cat(expect, 0)));
  // Equal shards: the same as all_gather.
  const at::Tensor even = at::full({3}, r, at::TensorOptions(at::kInt));
  EXPECT_TRUE(at::equal(world().all_gather_v(even), world().all_gather(even)));
}

TEST(Comm, AllGatherVRejectsDifferentTrailingDims) {
  const int r = world().rank();
  if (world().size() == 1) GTEST_SKIP() << "needs two ranks";
  const at::Tensor t = at::zeros({2, r == 0 ? 4 : 5});
  EXPECT_THAT(error_of([&] { world().all_gather_v(t); }), HasSubstr("only dim 0 may differ"));
  EXPECT_THAT(error_of([&] { world().all_gather_v(at::zeros({1}, at::TensorOptions(r == 0 ? at::kFloat : at::kDouble))); }),
              HasSubstr("only dim 0 may differ"));
}

TEST(Comm, BroadcastFromTheLastRank) {
  const int n = world().size(), r = world().rank(), root = n - 1;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
    const at::Tensor want = at::arange(12, at::TensorOptions(dtype)).view({3, 4});
    at::Tensor t = r == root ? want.clone() : at::zeros({3, 4}, at::TensorOptions(dtype));
    world().broadcast(t, root);
    EXPECT_TRUE(at::equal(t, want));
  }
  at::Tensor t = at::zeros({1});
  EXPECT_THAT(error_of([&] { world().broadcast(t, n); }), HasSubstr("outside"));
}

TEST(Comm, NonContiguousTensorsAreRejected) {
  at::Tensor t = at::zeros({3, 4}).t();   // [4, 3], strides [1, 4]
  EXPECT_THAT(error_of([&] { world().all_reduce(t, ReduceOp::sum); }), HasSubstr("must be contiguous"));
  EXPECT_THAT(error_of([&] { world().all_gather(t); }), HasSubstr("must be contiguous"));
  EXPECT_THAT(error_of([&] { world().all_gather_v(t); }), HasSubstr("must be contiguous"));
  EXPECT_THAT(error_of([&] { world().broadcast(t, 0); }), HasSubstr("must be contiguous"));
}

TEST(Comm, UnsupportedDtypeIsRejected) {
  at::Tensor t = at::zeros({3}, at::TensorOptions(at::kBool));
  EXPECT_THAT(error_of([&] { world().all_reduce(t, ReduceOp::max); }), HasSubstr("dtype Bool is not supported"));
}

TEST(Comm, SplitOrdersByKeyThenRank) {
  const int n = world().size(), r = world().rank();
  // Two colors by parity; key = -rank reverses the order inside each group.
  const std::unique_ptr<Comm> half = world().split(r % 2, -r);
  ASSERT_TRUE(half);
  std::vector<int64_t> expect;
  for (int q = n - 1; q >= 0; --q)
    if (q % 2 == r % 2) expect.push_back(q);
  EXPECT_EQ(gathered_ranks(*half), expect);
  // A negative color joins no group.
  const std::unique_ptr<Comm> none = world().split(r == 0 ? -1 : 0, r);
  EXPECT_EQ(none == nullptr, r == 0);
  if (none) {
    EXPECT_EQ(none->size(), n - 1);
  }
}

TEST(Grid, CoordsPutTpOnTheFastIndex) {
  const GridCoords c = grid_coords(5, 8, 2);
  EXPECT_EQ(c.tp_rank, 1);
  EXPECT_EQ(c.dp_rank, 2);
  EXPECT_EQ(c.tp_size, 2);
  EXPECT_EQ(c.dp_size, 4);
  const GridCoords d = grid_coords(6, 8, 4);
  EXPECT_EQ(d.tp_rank, 2);
  EXPECT_EQ(d.dp_rank, 1);
}

TEST(Grid, TpAndDpGroupsHaveTheRightMembers) {
  const int n = g_grid->world_size();
  if (n % 2 != 0) GTEST_SKIP() << "needs an even world";
  auto grid = Grid::init(nullptr, nullptr, 2);
  const int r = grid->rank();
  EXPECT_EQ(grid->tp_size(), 2);
  EXPECT_EQ(grid->dp_size(), n / 2);
  EXPECT_EQ(grid->tp_rank(), r % 2);
  EXPECT_EQ(grid->dp_rank(), r / 2);
  EXPECT_EQ(grid->tp().rank(), grid->tp_rank());
  EXPECT_EQ(grid->dp().rank(), grid->dp_rank());
  // tp group: consecutive ranks of one dp replica; dp group: every tp-th rank.
  const std::vector<int64_t> tp_members = {r / 2 * 2, r / 2 * 2 + 1};
  std::vector<int64_t> dp_members;
  for (int d = 0; d < n / 2; ++d) dp_members.push_back(d * 2 + r % 2);
  EXPECT_EQ(gathered_ranks(grid->tp()), tp_members);
  EXPECT_EQ(gathered_ranks(grid->dp()), dp_members);
  // Statistics reduced over dp stay per tp shard.
  at::Tensor t = at::full({1}, static_cast<double>(r), at::TensorOptions(at::kDouble));
  grid->dp().all_reduce(t, ReduceOp::sum);
  double expect = 0;
  for (int64_t q : dp_members) expect += q;
  EXPECT_EQ(t.item<double>(), expect);
  grid->finalize();
}

TEST(Grid, WorldNotDivisibleByTpIsRejected) {
  const int n = g_grid->world_size();
  EXPECT_THAT(error_of([&] { Grid::init(nullptr, nullptr, n + 1); }),
              HasSubstr(fmt::format("tp={} is larger than the world of {} rank(s)", n + 1, n)));
  EXPECT_THAT(error_of([] { grid_coords(0, 4, 3); }), HasSubstr("world size 4 is not divisible by tp=3"));
  EXPECT_THAT(error_of([] { grid_coords(0, 4, 0); }), HasSubstr("tp must be >= 1"));
}

TEST(Grid, TableHasOneLinePerRank) {
  const std::string table = g_grid->table();
  EXPECT_THAT(table, HasSubstr(fmt::format("world {} = dp {} x tp 1", g_grid->world_size(), g_grid->world_size())));
  size_t lines = 0;
  for (char c : table) lines += c == '\n';
  EXPECT_EQ(lines, static_cast<size_t>(2 + g_grid->world_size()));   // title, header, ranks
  EXPECT_THAT(table, HasSubstr("cpu"));
  if (g_grid->rank() == 0) std::printf("%s", table.c_str());
}

namespace {

// Ranks other than 0 report only their failures, tagged with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  RankFailurePrinter(int rank, int world) : rank_(rank), world_(world) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d/%d] %s:%d: %s\n", rank_, world_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.summary());
  }

 private:
  int rank_, world_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::unique_ptr<Grid> grid;
  try {
    grid = Grid::init(&argc, &argv, 1);
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
  g_grid = grid.get();
  if (grid->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(grid->rank(), grid->world_size()));
  }
  const int local = RUN_ALL_TESTS();
  const int64_t any = grid->world().all_reduce_int(local != 0 ? 1 : 0, ReduceOp::max);
  if (grid->rank() == 0 && any != 0 && local == 0) std::fprintf(stderr, "test_comm: another rank failed (see above)\n");
  grid->finalize();
  return any != 0 ? 1 : 0;
}
