// A horizontal bar chart written as a PNG, with no plotting library: a built-in 5x7 bitmap font
// for the labels and zlib for the compressed image data. Enough for benchmark results on
// machines without matplotlib.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ckptio::bench {

struct Bar {
  std::string label;  // drawn in capitals
  double value = 0;
  uint32_t rgb = 0x4477aa;
  std::string value_text;  // printed after the bar
};

// Writes the chart; throws ckptio::Error on I/O failure.
void write_bar_chart_png(const std::filesystem::path& path, const std::string& title,
                         const std::vector<Bar>& bars);

}  // namespace ckptio::bench
