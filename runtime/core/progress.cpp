#include "runtime/core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "runtime/core/log.h"

namespace secateur {

using clock_type = std::chrono::steady_clock;

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      tty_(isatty(STDERR_FILENO) != 0),
      enabled_(log::rank() == 0),
      start_(clock_type::now()),
      last_(start_) {}

Progress::~Progress() { finish(); }

double Progress::seconds() const { return std::chrono::duration<double>(clock_type::now() - start_).count(); }

void Progress::add(int64_t n) {
  done_ += n;
  const auto now = clock_type::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since >= (tty_ ? 0.2 : 10.0)) {
    last_ = now;
    print(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  print(true);
}

void Progress::print(bool final) {
  if (!enabled_) return;
  const double s = seconds();
  const double rate = s > 0 ? done_ / s : 0.0;
  const double eta = rate > 0 && total_ > done_ ? (total_ - done_) / rate : 0.0;
  const double frac = total_ > 0 ? static_cast<double>(done_) / total_ : 1.0;
  const std::string msg = fmt::format("{} {}/{} {} ({:.0f}%) | {:.1f} {}/s | {:.1f} s elapsed, ETA {:.0f} s", label_,
                                      done_, total_, unit_, 100.0 * frac, rate, unit_, s, eta);
  if (tty_) {
    const int width = 24, fill = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r[%s%s] %s\033[K%s", std::string(fill, '#').c_str(),
                 std::string(width - fill, '.').c_str(), msg.c_str(), final ? "\n" : "");
    std::fflush(stderr);
  } else {
    spdlog::info("{}", msg);
  }
}

}  // namespace secateur
