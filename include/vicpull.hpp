/*
 * vicpull.hpp: a header-only C++17 wrapper of the vicpull C API.
 *
 *   vicpull::options o;
 *   o.reference = "127.0.0.1:5000/app:1";
 *   o.store = "/tmp/oci";
 *   o.plain_http = true;
 *   vicpull::result r = vicpull::pull_image(o, [](const vicpull::progress &p) {
 *     std::cerr << p.layer << ": " << p.message << "\n";
 *   });
 *
 * - vicpull::pull owns one vic_pull (move-only; the destructor cancels a
 *   running pull and frees it).
 * - Failures throw vicpull::error (code + library message); the try_*
 *   functions return vicpull::expected<T> instead and never throw.
 * - The progress callback is a std::function that runs on the pull's
 *   library thread, one event at a time, in order. It must not wait for
 *   or destroy its own pull. An exception it throws cancels the pull and
 *   is rethrown by wait().
 * - vicpull::callbacks adds the commit hook, offered each verified layer in
 *   manifest order on that same thread; throwing refuses the layer, and
 *   wait() throws vicpull::error (host_rejected) with it nested.
 *
 * Link with libvicpull (pkg-config --cflags --libs vicpull).
 */

#ifndef VICPULL_HPP
#define VICPULL_HPP

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "vicpull.h"

namespace vicpull {

/* Result codes (vic_result); values are the C API's. */
enum class code : std::uint32_t {
  ok = VIC_RESULT_OK,
  pending = VIC_RESULT_PENDING,
  invalid_argument = VIC_RESULT_INVALID_ARGUMENT,
  bad_reference = VIC_RESULT_BAD_REFERENCE,
  auth = VIC_RESULT_AUTH,
  not_found = VIC_RESULT_NOT_FOUND,
  network = VIC_RESULT_NETWORK,
  registry = VIC_RESULT_REGISTRY,
  digest_mismatch = VIC_RESULT_DIGEST_MISMATCH,
  unsupported = VIC_RESULT_UNSUPPORTED,
  store_io = VIC_RESULT_STORE_IO,
  cancelled = VIC_RESULT_CANCELLED,
  internal = VIC_RESULT_INTERNAL,
  rate_limited = VIC_RESULT_RATE_LIMITED,
  buffer_too_small = VIC_RESULT_BUFFER_TOO_SMALL,
  host_rejected = VIC_RESULT_HOST_REJECTED,
};

/* "DIGEST_MISMATCH" etc.; "UNKNOWN" for other values. */
inline const char *name(code c) noexcept {
  return vic_result_name(static_cast<std::uint32_t>(c));
}

/* What vicpull reported: the code and the library's message. */
struct error_info {
  vicpull::code code = vicpull::code::internal;
  std::string message;
};

/* The exception thrown for library failures. what() is "NAME: message". */
class error : public std::runtime_error {
 public:
  explicit error(error_info info)
      : std::runtime_error(std::string(name(info.code)) + ": " + info.message),
        info_(std::move(info)) {}
  vicpull::code code() const noexcept { return info_.code; }
  const std::string &message() const noexcept { return info_.message; }
  const error_info &info() const noexcept { return info_; }

 private:
  error_info info_;
};

/* A value or an error_info, for code that does not use exceptions. */
template <class T>
class [[nodiscard]] expected {
 public:
  expected(T value) : v_(std::move(value)) {}
  expected(error_info e) : v_(std::move(e)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }
  /* The value; throws vicpull::error when there is none. */
  T &value() & {
    check();
    return std::get<0>(v_);
  }
  T &&value() && {
    check();
    return std::get<0>(std::move(v_));
  }
  T *operator->() { return &value(); }
  T &operator*() & { return value(); }
  /* The error; only valid when !has_value(). */
  const error_info &error() const { return std::get<1>(v_); }

 private:
  void check() const {
    if (!has_value()) throw vicpull::error(std::get<1>(v_));
  }
  std::variant<T, error_info> v_;
};

enum class progress_kind : std::uint32_t {
  pulling_from = VIC_PROGRESS_KIND_PULLING_FROM,
  pulling_fs_layer = VIC_PROGRESS_KIND_PULLING_FS_LAYER,
  waiting = VIC_PROGRESS_KIND_WAITING,
  downloading = VIC_PROGRESS_KIND_DOWNLOADING,
  verifying_checksum = VIC_PROGRESS_KIND_VERIFYING_CHECKSUM,
  download_complete = VIC_PROGRESS_KIND_DOWNLOAD_COMPLETE,
  pull_complete = VIC_PROGRESS_KIND_PULL_COMPLETE,
  already_exists = VIC_PROGRESS_KIND_ALREADY_EXISTS,
  retrying = VIC_PROGRESS_KIND_RETRYING,
  digest = VIC_PROGRESS_KIND_DIGEST,
  status = VIC_PROGRESS_KIND_STATUS,
};

/* One progress event. The views are valid only during the callback. */
struct progress {
  std::string_view layer; /* "" for image-level messages */
  progress_kind kind;
  std::uint64_t current; /* bytes for downloading; attempt for retrying */
  std::uint64_t total;   /* layer size for downloading, pulling_fs_layer */
  std::string_view message;
};

enum class state : std::uint32_t {
  pending = VIC_PULL_STATE_PENDING,
  done = VIC_PULL_STATE_DONE,
  failed = VIC_PULL_STATE_FAILED,
  cancelled = VIC_PULL_STATE_CANCELLED,
};

struct status {
  vicpull::state state;
  vicpull::code result; /* pending while running */
  std::uint32_t layers_total, layers_done;
  std::uint64_t bytes_total, bytes_done;
  bool finished() const noexcept { return state != vicpull::state::pending; }
};

/* Pull options; unset optionals take the library's defaults. */
struct options {
  std::string reference; /* required */
  std::string store;     /* required */
  std::optional<std::string> platform;
  bool plain_http = false;                   /* every registry */
  std::vector<std::string> plain_http_hosts; /* or just these host:port */
  std::optional<std::string> username, password, token;
  std::optional<std::uint32_t> max_concurrent_downloads, max_attempts;
  std::optional<bool> verify_diff_ids;
  std::optional<std::int32_t> priority;
  std::optional<std::uint64_t> low_speed_limit, low_speed_time_secs;
  std::optional<std::uint64_t> partial_max_age_secs, partial_max_bytes;
  /* Further options as (key, JSON value text) pairs, for keys the members
   * above do not name yet, e.g. {"max_retry_wait_secs", "10"}. */
  std::vector<std::pair<std::string, std::string>> extra;

  /* The JSON vic_pull_start takes. */
  std::string to_json() const;
};

/* A verified layer offered to the commit hook, before it is committed.
 * The views are valid only during the call. */
struct layer_commit {
  std::uint32_t index; /* position in the manifest (repeats are offered) */
  std::string_view digest;
  std::string_view diff_id; /* "" when verify_diff_ids is off */
  std::string_view media_type;
  std::uint64_t size;
  std::string_view path; /* the verified blob in the store: read only */
};

using progress_fn = std::function<void(const progress &)>;
/* Returning accepts the layer; throwing refuses it (what() is the reason
 * the library reports) and fails the pull with code::host_rejected. */
using commit_fn = std::function<void(const layer_commit &)>;

/* The host's callbacks for one pull; either may be empty. Both run on the
 * pull's library thread, in order, never at the same time. */
struct callbacks {
  progress_fn on_progress;
  commit_fn on_commit;
};

struct layer {
  std::string digest;
  std::optional<std::string> diff_id;
  std::uint64_t size = 0;
  std::string media_type;
};

/* A successful pull (the fields of the library's result JSON). */
struct result {
  std::string reference, digest, manifest_digest, manifest_media_type;
  std::string stored_manifest_digest, config_digest;
  std::optional<std::string> platform;
  std::string store;
  std::vector<layer> layers;
  std::uint64_t bytes_downloaded = 0;
  bool up_to_date = false;
  std::string json; /* the JSON exactly as the library produced it */
};

namespace detail {

inline void escape_json(std::string &out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

/* Just enough JSON to read the library's result: objects, arrays,
 * strings, unsigned integers, booleans and null. */
struct json_value {
  enum class kind { null, boolean, number, string, array, object } k =
      kind::null;
  bool b = false;
  std::uint64_t n = 0;
  std::string s;
  std::vector<json_value> items;
  std::map<std::string, json_value> members;

  const json_value &operator[](const std::string &key) const {
    static const json_value none;
    auto it = members.find(key);
    return it == members.end() ? none : it->second;
  }
};

class json_parser {
 public:
  explicit json_parser(std::string_view text) : t_(text) {}

  json_value parse() {
    json_value v = value();
    ws();
    if (i_ != t_.size()) fail();
    return v;
  }

 private:
  [[noreturn]] void fail() const {
    throw error({code::internal, "malformed result JSON at byte " +
                                     std::to_string(i_)});
  }
  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' ||
                              t_[i_] == '\r' || t_[i_] == '\t'))
      ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < t_.size() && t_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(std::string_view word) {
    if (t_.substr(i_, word.size()) != word) fail();
    i_ += word.size();
  }
  unsigned hex4() {
    if (i_ + 4 > t_.size()) fail();
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = t_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else fail();
    }
    return v;
  }
  static void utf8(std::string &out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  std::string str() {
    if (!eat('"')) fail();
    std::string out;
    while (i_ < t_.size() && t_[i_] != '"') {
      char c = t_[i_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= t_.size()) fail();
      switch (t_[i_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && t_.substr(i_, 2) == "\\u") {
            i_ += 2;
            unsigned lo = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(out, cp);
          break;
        }
        default: fail();
      }
    }
    if (i_ >= t_.size()) fail();
    ++i_;
    return out;
  }
  json_value value() {
    ws();
    if (i_ >= t_.size()) fail();
    json_value v;
    char c = t_[i_];
    if (c == '{') {
      ++i_;
      v.k = json_value::kind::object;
      if (eat('}')) return v;
      do {
        ws();
        std::string key = str();
        if (!eat(':')) fail();
        v.members[key] = value();
      } while (eat(','));
      if (!eat('}')) fail();
    } else if (c == '[') {
      ++i_;
      v.k = json_value::kind::array;
      if (eat(']')) return v;
      do v.items.push_back(value());
      while (eat(','));
      if (!eat(']')) fail();
    } else if (c == '"') {
      v.k = json_value::kind::string;
      v.s = str();
    } else if (c == 't' || c == 'f') {
      v.k = json_value::kind::boolean;
      v.b = c == 't';
      expect(v.b ? "true" : "false");
    } else if (c == 'n') {
      expect("null");
    } else if (c >= '0' && c <= '9') {
      v.k = json_value::kind::number;
      while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9')
        v.n = v.n * 10 + static_cast<std::uint64_t>(t_[i_++] - '0');
    } else {
      fail();
    }
    return v;
  }

  std::string_view t_;
  std::size_t i_ = 0;
};

inline std::optional<std::string> opt_string(const json_value &v) {
  if (v.k == json_value::kind::string) return v.s;
  return std::nullopt;
}

/* Read a caller-buffer text function: ask the length, then the text. */
template <class Fill>
inline std::pair<vic_result, std::string> read_text(Fill fill) {
  std::size_t n = 0;
  vic_result rc = fill(nullptr, 0, &n);
  if (rc != VIC_RESULT_OK && rc != VIC_RESULT_BUFFER_TOO_SMALL)
    return {rc, {}};
  std::string s(n + 1, '\0');
  rc = fill(s.data(), s.size(), &n);
  s.resize(rc == VIC_RESULT_OK ? n : 0);
  return {rc, s};
}

/* The message of an exception caught in a callback. */
inline std::string what(const std::exception_ptr &e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception &x) {
    return x.what();
  } catch (...) {
    return "a non-std exception";
  }
}

/* Copy `text` into the library's buffer of `len` bytes, cut at a UTF-8
 * character boundary and NUL-terminated. */
inline void copy_reason(char *buf, std::size_t len, std::string_view text) noexcept {
  if (buf == nullptr || len == 0) return;
  std::size_t n = text.size() < len ? text.size() : len - 1;
  while (n > 0 && n < text.size() &&
         (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80)
    --n;
  text.copy(buf, n);
  buf[n] = '\0';
}

/* This thread's vic_last_error_message, as an error_info for `rc`. */
inline error_info last_error(vic_result rc) {
  auto text = read_text([](char *b, std::size_t l, std::size_t *n) {
                return vic_last_error_message(b, l, n);
              }).second;
  error_info e{static_cast<code>(rc), std::move(text)};
  std::string prefix = std::string(name(e.code)) + ": ";
  if (e.message.compare(0, prefix.size(), prefix) == 0)
    e.message.erase(0, prefix.size());
  return e;
}

}  // namespace detail

/* Parse the library's result JSON. Throws vicpull::error if malformed. */
inline result parse_result(std::string json) {
  detail::json_value v = detail::json_parser(json).parse();
  result r;
  r.reference = v["reference"].s;
  r.digest = v["digest"].s;
  r.manifest_digest = v["manifest_digest"].s;
  r.manifest_media_type = v["manifest_media_type"].s;
  r.stored_manifest_digest = v["stored_manifest_digest"].s;
  r.config_digest = v["config_digest"].s;
  r.platform = detail::opt_string(v["platform"]);
  r.store = v["store"].s;
  for (const auto &l : v["layers"].items)
    r.layers.push_back({l["digest"].s, detail::opt_string(l["diff_id"]),
                        l["size"].n, l["media_type"].s});
  r.bytes_downloaded = v["bytes_downloaded"].n;
  r.up_to_date = v["up_to_date"].b;
  r.json = std::move(json);
  return r;
}

inline std::string options::to_json() const {
  std::string j = "{\"reference\":";
  detail::escape_json(j, reference);
  j += ",\"store\":";
  detail::escape_json(j, store);
  auto str = [&j](const char *key, const std::optional<std::string> &v) {
    if (!v) return;
    j += ",\"";
    j += key;
    j += "\":";
    detail::escape_json(j, *v);
  };
  auto num = [&j](const char *key, auto v) {
    if (!v) return;
    j += ",\"";
    j += key;
    j += "\":" + std::to_string(*v);
  };
  str("platform", platform);
  if (plain_http) {
    j += ",\"plain_http\":true";
  } else if (!plain_http_hosts.empty()) {
    j += ",\"plain_http\":[";
    for (std::size_t i = 0; i < plain_http_hosts.size(); ++i) {
      if (i) j += ',';
      detail::escape_json(j, plain_http_hosts[i]);
    }
    j += ']';
  }
  str("username", username);
  str("password", password);
  str("token", token);
  num("max_concurrent_downloads", max_concurrent_downloads);
  num("max_attempts", max_attempts);
  if (verify_diff_ids)
    j += std::string(",\"verify_diff_ids\":") +
         (*verify_diff_ids ? "true" : "false");
  num("priority", priority);
  num("low_speed_limit", low_speed_limit);
  num("low_speed_time_secs", low_speed_time_secs);
  num("partial_max_age_secs", partial_max_age_secs);
  num("partial_max_bytes", partial_max_bytes);
  for (const auto &[key, value] : extra) {
    j += ',';
    detail::escape_json(j, key);
    j += ':';
    j += value;
  }
  j += '}';
  return j;
}

/* One image pull. Move-only; destroying it cancels and frees the pull
 * (blocking until its callbacks have returned). */
class pull {
 public:
  using progress_fn = vicpull::progress_fn;

  /* Start a pull; returns at once. Throws vicpull::error for bad options
   * (invalid_argument, bad_reference) with the library's message. */
  [[nodiscard]] static pull start(const options &o, progress_fn on_progress = {}) {
    return try_start(o, std::move(on_progress)).value();
  }
  [[nodiscard]] static pull start(const options &o, callbacks cb) {
    return try_start(o, std::move(cb)).value();
  }

  /* start() without exceptions (except std::bad_alloc). */
  [[nodiscard]] static expected<pull> try_start(const options &o,
                                                progress_fn on_progress = {}) {
    return try_start_json(o.to_json(), std::move(on_progress));
  }
  [[nodiscard]] static expected<pull> try_start(const options &o, callbacks cb) {
    return try_start_json(o.to_json(), std::move(cb));
  }

  /* Start from an options JSON object written by the caller. */
  [[nodiscard]] static expected<pull> try_start_json(const std::string &json,
                                                     progress_fn on_progress = {}) {
    return try_start_json(json, callbacks{std::move(on_progress), {}});
  }
  [[nodiscard]] static expected<pull> try_start_json(const std::string &json,
                                                     callbacks cb) {
    auto st = std::make_shared<shared>();
    st->on_progress = std::move(cb.on_progress);
    st->on_commit = std::move(cb.on_commit);
    // The library owns this reference until the finalizer releases it.
    auto *owner = new std::shared_ptr<shared>(st);
    vic_callbacks cbs{};
    cbs.user_data = owner;
    cbs.on_progress = st->on_progress ? &on_progress_tramp : nullptr;
    cbs.on_done = nullptr;
    cbs.finalizer = &finalize_tramp;
    cbs.on_commit = st->on_commit ? &on_commit_tramp : nullptr;
    vic_pull *p = nullptr;
    vic_result rc = vic_pull_start(json.c_str(), &cbs, &p);
    if (rc != VIC_RESULT_OK) {
      delete owner;  // never handed over
      return detail::last_error(rc);
    }
    st->handle.store(p);
    if (st->failed.load()) vic_pull_cancel(p);  // threw before we stored p
    return pull(p, std::move(st));
  }

  pull(pull &&o) noexcept : p_(std::exchange(o.p_, nullptr)), st_(std::move(o.st_)) {}
  pull &operator=(pull &&o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
      st_ = std::move(o.st_);
    }
    return *this;
  }
  pull(const pull &) = delete;
  pull &operator=(const pull &) = delete;
  ~pull() { reset(); }

  /* Ask the pull to stop; never blocks, idempotent. */
  void cancel() noexcept { vic_pull_cancel(p_); }

  /* The state and counters, waiting up to `timeout` for the end. */
  [[nodiscard]] status poll(
      std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const {
    vic_pull_status s{};
    auto ms = timeout.count() < 0 ? 0 : timeout.count();
    if (ms > 0xFFFFFFFFLL) ms = 0xFFFFFFFFLL;
    vic_result rc = vic_pull_poll(live(), static_cast<std::uint32_t>(ms), &s);
    if (rc != VIC_RESULT_OK) throw error(detail::last_error(rc));
    return {static_cast<vicpull::state>(s.state), static_cast<code>(s.result),
            s.layers_total, s.layers_done, s.bytes_total, s.bytes_done};
  }

  /* Block until the pull ends. Returns the result, or throws: the
   * exception the progress callback threw, else vicpull::error. When the
   * commit hook refused a layer that error (host_rejected) has the hook's
   * exception nested: std::rethrow_if_nested(e) throws it. */
  [[nodiscard]] result wait() {
    auto r = try_wait();
    if (st_ && st_->callback_error) std::rethrow_exception(st_->callback_error);
    if (!r && r.error().code == code::host_rejected && st_->commit_error) {
      try {
        std::rethrow_exception(st_->commit_error);
      } catch (...) {
        std::throw_with_nested(error(r.error()));
      }
    }
    return std::move(r).value();
  }

  /* wait() reporting failures as error_info; a callback exception shows
   * as code::cancelled (its text is in the message when it was a
   * std::exception). */
  [[nodiscard]] expected<result> try_wait() {
    status s = poll();
    while (!s.finished()) s = poll(std::chrono::milliseconds(1000));
    if (st_->callback_error)
      return error_info{code::cancelled, "progress callback threw: " + st_->callback_what};
    if (s.state != vicpull::state::done) {
      auto text = detail::read_text([this](char *b, std::size_t l, std::size_t *n) {
        return vic_pull_error_message(p_, b, l, n);
      });
      return error_info{s.result, text.second};
    }
    auto [rc, json] = detail::read_text([this](char *b, std::size_t l, std::size_t *n) {
      return vic_pull_result_json(p_, b, l, n);
    });
    if (rc != VIC_RESULT_OK) return detail::last_error(rc);
    return parse_result(std::move(json));
  }

  /* The C handle, still owned by this object. */
  vic_pull *native_handle() const noexcept { return p_; }

 private:
  struct shared {
    progress_fn on_progress;
    commit_fn on_commit;
    std::atomic<vic_pull *> handle{nullptr};
    std::atomic<bool> failed{false};
    std::exception_ptr callback_error;  // written once, before `failed`
    std::string callback_what;
    // What the commit hook threw when it refused a layer (first only);
    // written on the library thread, read once the pull has finished.
    std::exception_ptr commit_error;
  };

  pull(vic_pull *p, std::shared_ptr<shared> st) : p_(p), st_(std::move(st)) {}

  vic_pull *live() const {
    if (!p_) throw std::logic_error("vicpull::pull used after move");
    return p_;
  }

  void reset() noexcept {
    vic_pull_free(std::exchange(p_, nullptr));  // NULL is a no-op
  }

  static void on_progress_tramp(void *user, const vic_progress *p) {
    auto &st = **static_cast<std::shared_ptr<shared> *>(user);
    if (st.failed.load()) return;
    try {
      progress ev{p->layer_digest ? std::string_view(p->layer_digest) : std::string_view(),
                  static_cast<progress_kind>(p->kind), p->current, p->total,
                  p->message ? std::string_view(p->message) : std::string_view()};
      st.on_progress(ev);
    } catch (...) {
      // Nothing may unwind into the library: keep it for wait().
      st.callback_error = std::current_exception();
      try {
        throw;
      } catch (const std::exception &e) {
        st.callback_what = e.what();
      } catch (...) {
        st.callback_what = "a non-std exception";
      }
      st.failed.store(true);
      vic_pull_cancel(st.handle.load());  // NULL (not stored yet) is a no-op
    }
  }

  static std::int32_t on_commit_tramp(void *user, const vic_layer_commit *l,
                                      char *err_buf, std::size_t err_len) {
    auto &st = **static_cast<std::shared_ptr<shared> *>(user);
    auto view = [](const char *s) { return s ? std::string_view(s) : std::string_view(); };
    try {
      if (st.failed.load()) {
        detail::copy_reason(err_buf, err_len, "the progress callback threw");
        return 1;
      }
      try {
        st.on_commit({l->index, view(l->digest), view(l->diff_id), view(l->media_type),
                      l->size, view(l->path)});
        return 0;
      } catch (...) {
        // Nothing may unwind into the library: refuse, keep it for wait().
        auto e = std::current_exception();
        if (!st.commit_error) st.commit_error = e;
        detail::copy_reason(err_buf, err_len, detail::what(e));
        return 1;
      }
    } catch (...) {  // std::bad_alloc while refusing: still refuse
      return 1;
    }
  }

  static void finalize_tramp(void *user) {
    delete static_cast<std::shared_ptr<shared> *>(user);
  }

  vic_pull *p_ = nullptr;
  std::shared_ptr<shared> st_;
};

/* Pull an image and wait for it; throws like pull::wait(). */
[[nodiscard]] inline result pull_image(const options &o, pull::progress_fn on_progress = {}) {
  return pull::start(o, std::move(on_progress)).wait();
}
[[nodiscard]] inline result pull_image(const options &o, callbacks cb) {
  return pull::start(o, std::move(cb)).wait();
}

/* Remove resumable partial downloads of a store (see
 * vic_store_purge_partials); returns {files, bytes} removed. */
[[nodiscard]] inline std::pair<std::uint64_t, std::uint64_t> purge_partials(
    const std::string &store, std::uint64_t max_age_secs = 0,
    std::uint64_t max_total_bytes = 0) {
  std::uint64_t files = 0, bytes = 0;
  vic_result rc = vic_store_purge_partials(store.c_str(), max_age_secs,
                                           max_total_bytes, &files, &bytes);
  if (rc != VIC_RESULT_OK) throw error(detail::last_error(rc));
  return {files, bytes};
}

enum class log_level : std::uint32_t {
  off = VIC_LOG_LEVEL_OFF,
  error = VIC_LOG_LEVEL_ERROR,
  warn = VIC_LOG_LEVEL_WARN,
  info = VIC_LOG_LEVEL_INFO,
  debug = VIC_LOG_LEVEL_DEBUG,
  trace = VIC_LOG_LEVEL_TRACE,
};

using log_fn = std::function<void(log_level, std::string_view target,
                                  std::string_view message)>;

namespace detail {
inline void log_tramp(void *user, const vic_log_params *p) {
  try {
    (*static_cast<log_fn *>(user))(
        static_cast<log_level>(p->level), p->target ? p->target : "",
        p->message ? p->message : "");
  } catch (...) {
    // A logger that throws loses that line; nothing unwinds into C.
  }
}
inline std::mutex &log_mutex() {
  static std::mutex m;
  return m;
}
inline std::unique_ptr<log_fn> &log_slot() {
  static std::unique_ptr<log_fn> fn;
  return fn;
}
}  // namespace detail

/* Send the library's log lines at `level` and above to `fn` (empty fn or
 * log_level::off: silence). `fn` may run on any library thread, at the
 * same time on several: it must be thread-safe and not call vicpull. */
inline void set_logger(log_level level, log_fn fn) {
  std::lock_guard<std::mutex> lock(detail::log_mutex());
  auto next = fn ? std::make_unique<log_fn>(std::move(fn)) : nullptr;
  vic_result rc = vic_log_set(next ? &detail::log_tramp : nullptr, next.get(),
                              static_cast<std::uint32_t>(level));
  if (rc != VIC_RESULT_OK) throw error(detail::last_error(rc));
  // vic_log_set returned: no line is being delivered to the old one.
  detail::log_slot() = std::move(next);
}

inline const char *version() noexcept { return vic_version(); }

}  // namespace vicpull

#endif /* VICPULL_HPP */
