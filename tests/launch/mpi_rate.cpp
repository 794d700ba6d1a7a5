// launch_mpi_rate: measures the MPI point-to-point rate from rank 0 to the last rank, the way
// geopipe launch starts a job (so emulated links are measured through mpirun, Open MPI's TCP
// transport and the kernel's rate limits). Every rank also checks the environment launch
// promised it. Prints one line: `rate_mbit_per_s=<x> bytes=<n> seconds=<t> region0=<r> regionN=<r>`.
// Like OSU's osu_bw, a window of non-blocking sends is kept in flight.
//   launch_mpi_rate [--mib N] [--chunk-kib K] [--window W]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  long mib = 16, chunk_kib = 1024, window = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--mib")) mib = std::atol(argv[i + 1]);
    if (!std::strcmp(argv[i], "--chunk-kib")) chunk_kib = std::atol(argv[i + 1]);
    if (!std::strcmp(argv[i], "--window")) window = std::max(1L, std::atol(argv[i + 1]));
  }
  const char* region = std::getenv("GEOPIPE_REGION");
  const char* topology = std::getenv("GEOPIPE_TOPOLOGY");
  if (!region || !topology || !std::getenv("GEOPIPE_EMULATE")) {
    std::fprintf(stderr, "rank %d: GEOPIPE_REGION, GEOPIPE_TOPOLOGY or GEOPIPE_EMULATE is not set\n", rank);
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  if (size < 2) {
    std::fprintf(stderr, "launch_mpi_rate needs at least 2 ranks\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  const int last = size - 1;
  const size_t chunk = static_cast<size_t>(chunk_kib) * 1024;
  const long chunks = std::max(1L, mib * 1024 / chunk_kib);
  std::vector<char> buf(chunk * static_cast<size_t>(window), 1);
  std::vector<MPI_Request> requests(static_cast<size_t>(window));
  char region_last[256] = {0};
  if (rank == last) std::snprintf(region_last, sizeof region_last, "%s", region);
  if (last != 0) {
    if (rank == last) MPI_Send(region_last, sizeof region_last, MPI_CHAR, 0, 9, MPI_COMM_WORLD);
    if (rank == 0) MPI_Recv(region_last, sizeof region_last, MPI_CHAR, last, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  // Warm-up (connection set-up), then the timed transfer ended by a one-byte acknowledgement.
  for (int round = 0; round < 2; ++round) {
    const long n = round == 0 ? std::min(chunks, window) : chunks;
    MPI_Barrier(MPI_COMM_WORLD);
    auto t0 = std::chrono::steady_clock::now();
    char ack = 0;
    if (rank == 0 || rank == last) {
      for (long done = 0; done < n;) {
        const long batch = std::min(window, n - done);
        for (long w = 0; w < batch; ++w) {
          char* p = buf.data() + static_cast<size_t>(w) * chunk;
          if (rank == 0)
            MPI_Isend(p, static_cast<int>(chunk), MPI_CHAR, last, 1, MPI_COMM_WORLD, &requests[w]);
          else
            MPI_Irecv(p, static_cast<int>(chunk), MPI_CHAR, 0, 1, MPI_COMM_WORLD, &requests[w]);
        }
        MPI_Waitall(static_cast<int>(batch), requests.data(), MPI_STATUSES_IGNORE);
        done += batch;
      }
      if (rank == 0)
        MPI_Recv(&ack, 1, MPI_CHAR, last, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      else
        MPI_Send(&ack, 1, MPI_CHAR, 0, 2, MPI_COMM_WORLD);
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (round == 1 && rank == 0) {
      double bytes = static_cast<double>(n) * static_cast<double>(chunk);
      std::printf("rate_mbit_per_s=%.2f bytes=%.0f seconds=%.4f region0=%s regionN=%s\n", bytes * 8 / s / 1e6, bytes, s,
                  region, region_last);
      std::fflush(stdout);
    }
  }
  MPI_Finalize();
  return 0;
}
