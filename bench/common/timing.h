// Timing helpers shared by the benchmark programs: a monotonic clock and medians of repeated runs.
#pragma once

#include <chrono>
#include <functional>
#include <vector>

namespace ckptio::bench {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start);

// The median (mean of the two middle values for an even count). v must not be empty.
double median(std::vector<double> v);

// Runs fn once and returns its wall time in seconds.
double time_once(const std::function<void()>& fn);

// Runs fn `repeat` times and returns the median wall time in seconds.
double time_median(int repeat, const std::function<void()>& fn);

}  // namespace ckptio::bench
