/*
 * C side of the Go binding: builds the vic_callbacks struct whose
 * trampolines call the exported Go functions in callbacks.go. Only the
 * cgo.Handle value (an integer) crosses into C, carried as user_data.
 */

#ifndef VICPULL_GO_SHIM_H
#define VICPULL_GO_SHIM_H

#include <stdint.h>

#include "vicpull.h"

/*
 * vic_pull_start with this binding's trampolines and `handle` as
 * user_data; progress events are wired only when `want_progress` is set,
 * the commit hook only when `want_commit` is.
 * On failure *err receives the thread's vic_last_error_message as a
 * malloc'd string (free() it), read on the same OS thread as the start:
 * the library keeps that message per thread and a goroutine may move.
 */
vic_result vicgo_pull_start(const char *options_json, uintptr_t handle,
                            int want_progress, int want_commit,
                            vic_pull **out, char **err);

#endif /* VICPULL_GO_SHIM_H */
