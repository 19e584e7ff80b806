// Tests of include/vicpull.hpp against a loopback registry.
//
//   test-vicpull-cpp APP_REF APP_DIGEST BIG_REF
//
// APP_REF is a small two-layer image whose manifest digest testkit seed
// printed; BIG_REF a large one. examples/cpp/test.sh sets them up.

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "vicpull.hpp"

namespace fs = std::filesystem;

namespace {

int passed = 0, failed = 0;
std::string app_ref, app_digest, big_ref;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: "  \
                << #cond << "\n";                                     \
      throw std::runtime_error("check failed");                       \
    }                                                                 \
  } while (0)

fs::path fresh_store(const std::string &name) {
  fs::path p = fs::temp_directory_path() / ("vicpull-cpp-test-" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  return p;
}

vicpull::options opts_for(const std::string &ref, const std::string &store) {
  vicpull::options o;
  o.reference = ref;
  o.store = fresh_store(store).string();
  o.plain_http = true;
  return o;
}

// Temp and lock files left in the ingest area; kept .partial files are
// meant for resuming and do not count.
std::vector<std::string> leftovers(const std::string &store) {
  std::vector<std::string> out;
  fs::path d = fs::path(store) / ".vicpull" / "ingest";
  if (!fs::is_directory(d)) return out;
  for (const auto &e : fs::directory_iterator(d))
    if (e.path().extension() != ".partial") out.push_back(e.path().filename().string());
  return out;
}

void test_version() { CHECK(std::string(vicpull::version()) == VICPULL_VERSION); }

void test_pull_matches_seed() {
  auto o = opts_for(app_ref, "app");
  std::vector<vicpull::progress_kind> kinds;
  std::vector<std::string> layers;
  std::vector<std::uint64_t> currents;
  auto r = vicpull::pull_image(o, [&](const vicpull::progress &p) {
    kinds.push_back(p.kind);
    layers.emplace_back(p.layer);
    currents.push_back(p.current);
  });
  CHECK(r.manifest_digest == app_digest && r.digest == app_digest);
  CHECK(r.reference == app_ref && r.store == o.store);
  CHECK(r.layers.size() == 2 && !r.up_to_date);
  for (const auto &l : r.layers) {
    CHECK(l.digest.rfind("sha256:", 0) == 0 && l.diff_id && l.size > 0);
    std::uint64_t last = 0;
    bool complete = false;
    for (std::size_t i = 0; i < kinds.size(); ++i) {
      if (layers[i] != l.digest) continue;
      CHECK(!complete);  // nothing after pull_complete
      if (kinds[i] == vicpull::progress_kind::downloading) {
        CHECK(currents[i] >= last);
        last = currents[i];
      }
      complete = kinds[i] == vicpull::progress_kind::pull_complete;
    }
    CHECK(complete && last == l.size);
  }
  CHECK(kinds.front() == vicpull::progress_kind::pulling_from && layers.front().empty());
  CHECK(kinds.back() == vicpull::progress_kind::status);
  CHECK(r.json.find(app_digest) != std::string::npos);
  CHECK(fs::exists(fs::path(o.store) / "index.json"));
  CHECK(leftovers(o.store).empty());

  auto again = vicpull::pull_image(o);
  CHECK(again.up_to_date && again.config_digest == r.config_digest);
}

void test_bad_options_throw_with_message() {
  auto o = opts_for("a/b", "bad");
  o.max_concurrent_downloads = 65;
  try {
    auto p = vicpull::pull::start(o);
    CHECK(false);
  } catch (const vicpull::error &e) {
    CHECK(e.code() == vicpull::code::invalid_argument);
    CHECK(e.message().find("max_concurrent_downloads must be 1 to 64") != std::string::npos);
    CHECK(e.message().rfind("INVALID_ARGUMENT", 0) == std::string::npos);
    CHECK(std::string(e.what()) == "INVALID_ARGUMENT: " + e.message());
  }
}

void test_extra_options_reach_the_library() {
  auto o = opts_for("a/b", "extra");
  o.extra = {{"max_attempts", "0"}};
  auto p = vicpull::pull::try_start(o);
  CHECK(!p && p.error().code == vicpull::code::invalid_argument);
  CHECK(p.error().message.find("max_attempts must be 1 to 100") != std::string::npos);
}

void test_try_start_does_not_throw() {
  auto o = opts_for("UPPER/Case::x", "badref");
  auto p = vicpull::pull::try_start(o);
  CHECK(!p && p.error().code == vicpull::code::bad_reference && !p.error().message.empty());
  bool threw = false;
  try {
    (void)p.value();
  } catch (const vicpull::error &e) {
    threw = e.code() == vicpull::code::bad_reference;
  }
  CHECK(threw);
  auto raw = vicpull::pull::try_start_json("{\"reference\": 1}");
  CHECK(!raw && raw.error().code == vicpull::code::invalid_argument);
}

void test_json_escaping_reaches_the_library() {
  auto o = opts_for("a/\"b\\\n", "escape");
  auto p = vicpull::pull::try_start(o);
  // Valid JSON, so the reference itself is what gets refused.
  CHECK(!p && p.error().code == vicpull::code::bad_reference);
}

void test_not_found() {
  auto o = opts_for(app_ref.substr(0, app_ref.rfind(':')) + ":nope", "nf");
  auto r = vicpull::pull::start(o).try_wait();
  CHECK(!r && r.error().code == vicpull::code::not_found);
  CHECK(r.error().message.find("404") != std::string::npos);
}

void test_callback_exception_cancels_and_is_rethrown() {
  auto o = opts_for(big_ref, "throw");
  std::atomic<int> after{0};
  bool thrown = false;
  try {
    auto r = vicpull::pull_image(o, [&](const vicpull::progress &p) {
      if (thrown) ++after;
      if (p.kind == vicpull::progress_kind::downloading) {
        thrown = true;
        throw std::runtime_error("stop here");
      }
    });
    CHECK(false);
  } catch (const std::runtime_error &e) {
    CHECK(std::string(e.what()) == "stop here");
  }
  CHECK(thrown && after == 0);
  CHECK(leftovers(o.store).empty());

  auto p = vicpull::pull::start(opts_for(big_ref, "throw2"), [](const vicpull::progress &) {
    throw 42;  // not a std::exception
  });
  auto r = p.try_wait();
  CHECK(!r && r.error().code == vicpull::code::cancelled);
}

void test_cancel_poll_and_moves() {
  auto o = opts_for(big_ref, "cancel");
  auto p = vicpull::pull::start(o);
  auto s = p.poll();
  CHECK(!s.finished() && s.result == vicpull::code::pending);
  vicpull::pull moved(std::move(p));
  CHECK(p.native_handle() == nullptr && moved.native_handle() != nullptr);
  moved.cancel();
  moved.cancel();
  try {
    auto r = moved.wait();
    CHECK(false);
  } catch (const vicpull::error &e) {
    CHECK(e.code() == vicpull::code::cancelled);
  }
  s = moved.poll();
  CHECK(s.state == vicpull::state::cancelled && s.result == vicpull::code::cancelled);
  bool logic = false;
  try {
    (void)p.poll();
  } catch (const std::logic_error &) {
    logic = true;
  }
  CHECK(logic);

  // Move-assigning over a running pull cancels and frees it.
  auto a = vicpull::pull::start(opts_for(big_ref, "assign-a"));
  a = vicpull::pull::start(opts_for(app_ref, "assign-b"));
  CHECK(a.wait().manifest_digest == app_digest);
  CHECK(leftovers(o.store).empty());
}

// What the hooks saw: each offer (copied), and how many pull_complete
// events its layer had had by then.
struct hook_log {
  struct offer {
    std::uint32_t index;
    std::string digest, diff_id, media_type, path;
    std::uint64_t size, file_size;
    int complete_before;
  };
  std::vector<offer> offers;
  std::map<std::string, int> complete;

  vicpull::callbacks callbacks(std::function<void(const vicpull::layer_commit &)> refuse = {}) {
    vicpull::callbacks cb;
    cb.on_progress = [this](const vicpull::progress &p) {
      if (p.kind == vicpull::progress_kind::pull_complete) ++complete[std::string(p.layer)];
    };
    cb.on_commit = [this, refuse](const vicpull::layer_commit &l) {
      std::error_code ec;
      auto size = fs::file_size(fs::path(l.path), ec);
      auto done = complete.find(std::string(l.digest));
      offers.push_back({l.index, std::string(l.digest), std::string(l.diff_id),
                        std::string(l.media_type), std::string(l.path), l.size,
                        ec ? 0 : size, done == complete.end() ? 0 : done->second});
      if (refuse) refuse(l);
    };
    return cb;
  }
};

std::string blob_path(const std::string &store, const std::string &digest) {
  return (fs::path(store) / "blobs" / "sha256" / digest.substr(digest.find(':') + 1)).string();
}

// index.json entries that name an image.
int named_images(const std::string &store) {
  std::ifstream in(fs::path(store) / "index.json");
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  int n = 0;
  for (auto at = s.find("org.opencontainers.image.ref.name"); at != std::string::npos;
       at = s.find("org.opencontainers.image.ref.name", at + 1))
    ++n;
  return n;
}

void test_commit_hook_sees_layers_in_order() {
  auto o = opts_for(app_ref, "commit");
  hook_log log;
  auto r = vicpull::pull_image(o, log.callbacks());
  CHECK(r.layers.size() == 2 && log.offers.size() == 2);
  for (std::uint32_t i = 0; i < 2; ++i) {
    const auto &got = log.offers[i];
    const auto &want = r.layers[i];
    CHECK(got.index == i && got.digest == want.digest && got.size == want.size);
    CHECK(want.diff_id && got.diff_id == *want.diff_id && got.media_type == want.media_type);
    CHECK(got.path == blob_path(o.store, got.digest) && got.file_size == got.size);
    // Offered before its pull_complete, which still came once after.
    CHECK(got.complete_before == 0 && log.complete[got.digest] == 1);
  }

  auto bare = opts_for(app_ref, "commit-bare");
  bare.verify_diff_ids = false;
  hook_log plain;
  (void)vicpull::pull_image(bare, plain.callbacks());
  CHECK(plain.offers.size() == 2 && plain.offers[0].diff_id.empty() &&
        plain.offers[1].diff_id.empty());
}

void test_commit_hook_throw_refuses_second_layer() {
  auto refuse_second = [](const vicpull::layer_commit &l) {
    if (l.index == 1) throw std::runtime_error("disk image full");
  };
  auto o = opts_for(app_ref, "refuse");
  hook_log log;
  auto p = vicpull::pull::start(o, log.callbacks(refuse_second));
  auto r = p.try_wait();
  CHECK(!r && r.error().code == vicpull::code::host_rejected);
  CHECK(log.offers.size() == 2);
  const auto &first = log.offers[0], &second = log.offers[1];
  CHECK(r.error().message.find("disk image full") != std::string::npos);
  CHECK(r.error().message.find(second.digest) != std::string::npos);
  auto s = p.poll();
  CHECK(s.state == vicpull::state::failed && s.layers_done == 1);
  CHECK(log.complete[first.digest] == 1 && log.complete.count(second.digest) == 0);
  CHECK(named_images(o.store) == 0);
  CHECK(fs::file_size(first.path) == first.size);
  // The refused layer was verified into the store before it was offered;
  // it stays as a blob no image names.
  CHECK(fs::exists(second.path));
  CHECK(leftovers(o.store).empty());

  // wait() throws the library's error with the hook's exception nested.
  bool nested = false;
  try {
    hook_log again;
    (void)vicpull::pull_image(opts_for(app_ref, "refuse-wait"), again.callbacks(refuse_second));
  } catch (const vicpull::error &e) {
    CHECK(e.code() == vicpull::code::host_rejected);
    try {
      std::rethrow_if_nested(e);
    } catch (const std::runtime_error &inner) {
      nested = std::string(inner.what()) == "disk image full";
    }
  }
  CHECK(nested);
}

void test_commit_hook_non_std_exception_refuses() {
  auto o = opts_for(app_ref, "refuse-42");
  hook_log log;
  auto p = vicpull::pull::start(o, log.callbacks([](const vicpull::layer_commit &) {
    throw 42;  // not a std::exception
  }));
  auto r = p.try_wait();
  CHECK(!r && r.error().code == vicpull::code::host_rejected);
  CHECK(r.error().message.find("a non-std exception") != std::string::npos);
  CHECK(log.offers.size() == 1 && named_images(o.store) == 0);
  bool nested = false;
  try {
    (void)p.wait();
  } catch (const vicpull::error &e) {
    try {
      std::rethrow_if_nested(e);
    } catch (int v) {
      nested = v == 42;
    }
  }
  CHECK(nested);
}

void test_purge_partials() {
  auto none = vicpull::purge_partials(fresh_store("purge").string());
  CHECK(none.first == 0 && none.second == 0);
}

void test_logger() {
  std::atomic<int> lines{0};
  vicpull::set_logger(vicpull::log_level::trace,
                      [&](vicpull::log_level, std::string_view, std::string_view) { ++lines; });
  auto r = vicpull::pull_image(opts_for(app_ref, "log"));
  vicpull::set_logger(vicpull::log_level::off, {});
  CHECK(r.manifest_digest == app_digest);
  std::cerr << "  (" << lines.load() << " log lines at trace)\n";
}

void test_parse_result_escapes() {
  auto r = vicpull::parse_result(
      "{\"reference\":\"a\\u00e9\\ud83d\\ude00\\n\",\"platform\":null,"
      "\"layers\":[{\"digest\":\"d\",\"diff_id\":null,\"size\":18446744073709551615,"
      "\"media_type\":\"m\"}],\"up_to_date\":true,\"bytes_downloaded\":0}");
  CHECK(r.reference == "a\xc3\xa9\xf0\x9f\x98\x80\n");
  CHECK(!r.platform && r.layers.size() == 1 && !r.layers[0].diff_id);
  CHECK(r.layers[0].size == 18446744073709551615ULL && r.up_to_date);
  bool threw = false;
  try {
    (void)vicpull::parse_result("{\"a\":");
  } catch (const vicpull::error &e) {
    threw = e.code() == vicpull::code::internal;
  }
  CHECK(threw);
}

void run(const char *name, void (*fn)()) {
  try {
    fn();
    ++passed;
    std::cerr << "ok   " << name << "\n";
  } catch (const std::exception &e) {
    ++failed;
    std::cerr << "FAIL " << name << ": " << e.what() << "\n";
  }
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 4) {
    std::cerr << "usage: test-vicpull-cpp APP_REF APP_DIGEST BIG_REF\n";
    return 2;
  }
  app_ref = argv[1];
  app_digest = argv[2];
  big_ref = argv[3];
  run("version", test_version);
  run("pull_matches_seed", test_pull_matches_seed);
  run("bad_options_throw_with_message", test_bad_options_throw_with_message);
  run("extra_options_reach_the_library", test_extra_options_reach_the_library);
  run("try_start_does_not_throw", test_try_start_does_not_throw);
  run("json_escaping_reaches_the_library", test_json_escaping_reaches_the_library);
  run("not_found", test_not_found);
  run("callback_exception_cancels_and_is_rethrown",
      test_callback_exception_cancels_and_is_rethrown);
  run("cancel_poll_and_moves", test_cancel_poll_and_moves);
  run("commit_hook_sees_layers_in_order", test_commit_hook_sees_layers_in_order);
  run("commit_hook_throw_refuses_second_layer", test_commit_hook_throw_refuses_second_layer);
  run("commit_hook_non_std_exception_refuses", test_commit_hook_non_std_exception_refuses);
  run("purge_partials", test_purge_partials);
  run("logger", test_logger);
  run("parse_result_escapes", test_parse_result_escapes);
  fs::remove_all(fs::temp_directory_path() / ("vicpull-cpp-test-" + std::to_string(::getpid())));
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}
