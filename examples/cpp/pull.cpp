// pull.cpp: pull an image with the C++ wrapper (include/vicpull.hpp).
//
//   pull-cpp REF --store DIR [--plain-http] [--platform P] [--json]
//
// Progress goes to stderr, one line per step (Downloading every 10%);
// --json prints the library's result JSON on stdout. Ctrl-C cancels the
// pull (exit status 130).

#include <csignal>
#include <cstring>
#include <iostream>
#include <map>
#include <string>

#include "vicpull.hpp"

namespace {

volatile std::sig_atomic_t interrupted = 0;

void on_sigint(int) { interrupted = 1; }

std::string short_id(std::string_view digest) {
  auto colon = digest.find(':');
  auto hex = colon == std::string_view::npos ? digest : digest.substr(colon + 1);
  return std::string(hex.substr(0, 12));
}

int usage() {
  std::cerr << "usage: pull-cpp REF --store DIR [--plain-http] [--platform P] [--json]\n";
  return 2;
}

}  // namespace

int main(int argc, char **argv) {
  vicpull::options opts;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--store" && i + 1 < argc) {
      opts.store = argv[++i];
    } else if (a == "--platform" && i + 1 < argc) {
      opts.platform = argv[++i];
    } else if (a == "--plain-http") {
      opts.plain_http = true;
    } else if (a == "--json") {
      json = true;
    } else if (!a.empty() && a[0] != '-' && opts.reference.empty()) {
      opts.reference = a;
    } else {
      return usage();
    }
  }
  if (opts.reference.empty() || opts.store.empty()) return usage();

  // Runs on the library's thread for this pull, one event at a time.
  std::map<std::string, std::uint64_t, std::less<>> shown;
  auto print = [&shown](const vicpull::progress &p) {
    if (p.layer.empty()) {
      std::cerr << p.message << "\n";
      return;
    }
    if (p.kind == vicpull::progress_kind::downloading && p.total > 0) {
      std::uint64_t pct = p.current * 100 / p.total;
      auto it = shown.find(p.layer);
      if (it != shown.end() && pct < it->second + 10 && pct != 100) return;
      shown[std::string(p.layer)] = pct;
      std::cerr << short_id(p.layer) << ": " << p.message << " " << pct << "%\n";
      return;
    }
    std::cerr << short_id(p.layer) << ": " << p.message << "\n";
  };

  std::signal(SIGINT, on_sigint);
  try {
    auto pull = vicpull::pull::start(opts, print);
    // Poll in slices so Ctrl-C is noticed; wait() then reports the end.
    while (!pull.poll(std::chrono::milliseconds(100)).finished()) {
      if (interrupted) pull.cancel();
    }
    auto r = pull.wait();
    if (json) {
      std::cout << r.json << "\n";
    } else {
      std::cout << r.reference << "\n  manifest " << r.manifest_digest << "\n  "
                << r.layers.size() << " layers, " << r.bytes_downloaded
                << " bytes downloaded, into " << r.store << "\n";
    }
    return 0;
  } catch (const vicpull::error &e) {
    if (e.code() == vicpull::code::cancelled && interrupted) {
      std::cerr << "interrupted: pull cancelled\n";
      return 130;
    }
    std::cerr << "pull-cpp: " << e.what() << "\n";
    return 1;
  }
}
