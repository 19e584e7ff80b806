#include "shim.h"

#include <stdlib.h>

#include "_cgo_export.h"

static void on_progress(void *user_data, const vic_progress *p) {
  vicgoProgress((uintptr_t)user_data, (vic_progress *)p);
}

static void on_done(void *user_data, uint32_t result, const char *message) {
  vicgoDone((uintptr_t)user_data, result, (char *)message);
}

static int32_t on_commit(void *user_data, const vic_layer_commit *layer,
                         char *err_buf, size_t err_len) {
  return vicgoCommit((uintptr_t)user_data, (vic_layer_commit *)layer,
                     err_buf, err_len);
}

static void finalize(void *user_data) {
  vicgoFinalize((uintptr_t)user_data);
}

static char *last_error(void) {
  size_t n = 0;
  vic_last_error_message(NULL, 0, &n);
  char *buf = malloc(n + 1);
  if (buf == NULL) {
    return NULL;
  }
  if (vic_last_error_message(buf, n + 1, &n) != VIC_RESULT_OK) {
    buf[0] = '\0';
  }
  return buf;
}

vic_result vicgo_pull_start(const char *options_json, uintptr_t handle,
                            int want_progress, int want_commit,
                            vic_pull **out, char **err) {
  vic_callbacks cbs = {
      .user_data = (void *)handle,
      .on_progress = want_progress ? on_progress : NULL,
      .on_done = on_done,
      .finalizer = finalize,
      .on_commit = want_commit ? on_commit : NULL,
  };
  vic_result rc = vic_pull_start(options_json, &cbs, out);
  *err = rc == VIC_RESULT_OK ? NULL : last_error();
  return rc;
}
