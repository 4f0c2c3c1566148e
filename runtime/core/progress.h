// runtime/core/progress.h — progress of long work on rank 0: a live bar on a TTY,
// a line every ~10 s otherwise (Slurm logs), with units/s and ETA.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace secateur {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "tok");
  void add(int64_t n);          // n more units done
  void finish();                // final line; called by the destructor if not already
  ~Progress();
  double seconds() const;

 private:
  void print(bool final);
  std::string label_, unit_;
  int64_t total_, done_ = 0;
  bool tty_, enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace secateur
