// hub_fetch_tool ENDPOINT CACHE_DIR REPO FILE: downloads one file with ckptio::hub and prints its
// local path; used by the tests to run several processes against one cache at once.
#include <cstdio>
#include <iostream>

#include "ckptio/error.h"
#include "ckptio/hub.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: hub_fetch_tool ENDPOINT CACHE_DIR REPO FILE\n";
    return 2;
  }
  ckptio::hub::HubOptions options;
  options.endpoint = argv[1];
  options.cache_dir = argv[2];
  options.progress = ckptio::hub::ProgressMode::Never;
  options.retry_base_delay = std::chrono::milliseconds(10);
  try {
    std::cout << ckptio::hub::download_file(argv[3], argv[4], options).string() << "\n";
    return 0;
  } catch (const ckptio::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
