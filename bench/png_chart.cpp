// PNG bar chart: RGB canvas, 5x7 font scaled 2x, zlib-compressed IDAT, CRCs from zlib.
#include "png_chart.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>

#include "ckptio/error.h"
#include "ckptio/io.h"

namespace ckptio::bench {
namespace {

// Rows top to bottom, 5 bits each, most significant bit leftmost.
struct Glyph {
  char c;
  std::array<uint8_t, 7> rows;
};

constexpr Glyph kFont[] = {
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}}, {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}}, {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}}, {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}}, {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
};

constexpr int kScale = 2;
constexpr int kCharW = 6 * kScale;  // 5 pixels and a gap
constexpr int kCharH = 7 * kScale;

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(static_cast<size_t>(w * h) * 3, 0xFF) {}
  int width() const { return w_; }
  int height() const { return h_; }

  void fill(int x0, int y0, int x1, int y1, uint32_t rgb) {
    x0 = std::clamp(x0, 0, w_);
    x1 = std::clamp(x1, 0, w_);
    y0 = std::clamp(y0, 0, h_);
    y1 = std::clamp(y1, 0, h_);
    for (int y = y0; y < y1; ++y) {
      for (int x = x0; x < x1; ++x) {
        uint8_t* p = &px_[static_cast<size_t>(y * w_ + x) * 3];
        p[0] = static_cast<uint8_t>(rgb >> 16);
        p[1] = static_cast<uint8_t>(rgb >> 8);
        p[2] = static_cast<uint8_t>(rgb);
      }
    }
  }

  void text(int x, int y, const std::string& s, uint32_t rgb = 0x222222) {
    for (char raw : s) {
      const char c = static_cast<char>(std::toupper(static_cast<unsigned char>(raw)));
      for (const Glyph& g : kFont) {
        if (g.c != c) continue;
        for (int r = 0; r < 7; ++r) {
          for (int b = 0; b < 5; ++b) {
            if (g.rows[static_cast<size_t>(r)] & (0x10 >> b)) {
              fill(x + b * kScale, y + r * kScale, x + (b + 1) * kScale, y + (r + 1) * kScale, rgb);
            }
          }
        }
        break;
      }
      x += kCharW;
    }
  }

  // Filter byte 0 before each row, as PNG wants.
  std::vector<uint8_t> scanlines() const {
    std::vector<uint8_t> out;
    out.reserve(static_cast<size_t>(h_) * (static_cast<size_t>(w_) * 3 + 1));
    for (int y = 0; y < h_; ++y) {
      out.push_back(0);
      const auto* row = &px_[static_cast<size_t>(y * w_) * 3];
      out.insert(out.end(), row, row + static_cast<size_t>(w_) * 3);
    }
    return out;
  }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
};

void put_u32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

void chunk(std::string& out, const char* type, const std::string& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  out += body;
  put_u32(out, static_cast<uint32_t>(
                   ::crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}

std::string encode_png(const Canvas& c) {
  const std::vector<uint8_t> raw = c.scanlines();
  uLongf packed_size = ::compressBound(static_cast<uLong>(raw.size()));
  std::string packed(packed_size, '\0');
  if (::compress2(reinterpret_cast<Bytef*>(packed.data()), &packed_size, raw.data(),
                  static_cast<uLong>(raw.size()), 9) != Z_OK) {
    throw Error(ErrorCode::Internal, "zlib failed to compress the chart");
  }
  packed.resize(packed_size);
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_u32(ihdr, static_cast<uint32_t>(c.width()));
  put_u32(ihdr, static_cast<uint32_t>(c.height()));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, deflate, no filter, no interlace
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", packed);
  chunk(png, "IEND", "");
  return png;
}

}  // namespace

void write_bar_chart_png(const std::filesystem::path& path, const std::string& title,
                         const std::vector<Bar>& bars) {
  size_t label_chars = 0, value_chars = 0;
  double max_value = 0;
  for (const Bar& b : bars) {
    label_chars = std::max(label_chars, b.label.size());
    value_chars = std::max(value_chars, b.value_text.size());
    max_value = std::max(max_value, b.value);
  }
  const int pad = 16, row_h = kCharH + 12, bar_area = 480;
  const int label_w = static_cast<int>(label_chars) * kCharW + pad;
  const int width = pad + label_w + bar_area + pad + static_cast<int>(value_chars) * kCharW + pad;
  const int height = pad + kCharH + pad + static_cast<int>(bars.size()) * row_h + pad;
  Canvas canvas(width, height);
  canvas.text(pad, pad, title);
  int y = pad + kCharH + pad;
  for (const Bar& b : bars) {
    canvas.text(pad, y + 6, b.label);
    const int x0 = pad + label_w;
    const int len = max_value > 0 ? static_cast<int>(std::lround(bar_area * b.value / max_value)) : 0;
    canvas.fill(x0, y + 3, x0 + std::max(len, 1), y + row_h - 3, b.rgb);
    canvas.text(x0 + len + 8, y + 6, b.value_text);
    y += row_h;
  }
  io::write_file_atomic(io::Env::posix(), path, encode_png(canvas));
}

}  // namespace ckptio::bench
