// tests/launch/mpi_hello.cpp — the smallest MPI program, run by the launch tests in place of
// secateur: each rank prints one line
//   rank R/N host H omp_threads T args [A B ...]
// (the tests grep "rank R/N"; threads and arguments show what the launcher passed on).
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1, len = 0;
  char host[MPI_MAX_PROCESSOR_NAME] = {};
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Get_processor_name(host, &len);
  const char* threads = std::getenv("OMP_NUM_THREADS");
  std::string args;
  for (int i = 1; i < argc; ++i) args += (i > 1 ? " " : "") + std::string(argv[i]);
  std::printf("rank %d/%d host %s omp_threads %s args [%s]\n", rank, size, host,
              threads ? threads : "unset", args.c_str());
  std::fflush(stdout);
  MPI_Finalize();
  return 0;
}
