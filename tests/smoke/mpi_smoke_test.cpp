// Four ranks pass a LibTorch tensor around a ring through MPI: proves that MPI and LibTorch
// link and run together in this build, and that ctest starts MPI programs correctly.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

TEST(MpiSmoke, RanksExchangeATensorAroundARing) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  ASSERT_GE(size, 2);
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;

  torch::Tensor mine = torch::arange(1000, torch::kFloat32) + 1000.0 * rank;
  torch::Tensor got = torch::full({1000}, -1.0f);
  MPI_Request reqs[2];
  MPI_Irecv(got.data_ptr<float>(), 1000, MPI_FLOAT, prev, 7, MPI_COMM_WORLD, &reqs[0]);
  MPI_Isend(mine.data_ptr<float>(), 1000, MPI_FLOAT, next, 7, MPI_COMM_WORLD, &reqs[1]);
  MPI_Waitall(2, reqs, MPI_STATUSES_IGNORE);

  torch::Tensor expected = torch::arange(1000, torch::kFloat32) + 1000.0 * prev;
  EXPECT_TRUE(torch::equal(got, expected)) << "rank " << rank << " got a wrong tensor from rank " << prev;

  // And a reduction, so every rank checks the whole world took part.
  double sum = got.sum().item<double>(), total = 0;
  MPI_Allreduce(&sum, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  double per_rank = 999.0 * 1000.0 / 2.0;
  EXPECT_DOUBLE_EQ(total, size * per_rank + 1000.0 * 1000.0 * (size * (size - 1) / 2.0));
}
