/*
 * pulltext: text out of vicpull as malloc'd strings, and the few fields of
 * the result JSON that the pull example prints.
 *
 * This is a second translation unit that includes vicpull.h, so building
 * the example also checks that the header links cleanly into two objects.
 */

#ifndef PULLTEXT_H
#define PULLTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vicpull.h"

/*
 * The message of the last failed vicpull call on this thread, e.g.
 * "BAD_REFERENCE: invalid reference ...". Never NULL; free() it.
 */
char *pt_last_error(void);

/*
 * The result JSON of a finished, successful pull; free() it. NULL when
 * vicpull did not return OK, with the code in *code (may be NULL).
 */
char *pt_result_json(const vic_pull *pull, vic_result *code);

/* The error text of a failed or cancelled pull; never NULL; free() it. */
char *pt_error_message(const vic_pull *pull);

/*
 * Copy the top-level string member `key` of the JSON object `json` into
 * out[n]. False when it is missing, not a plain string, or too long.
 */
bool pt_json_string(const char *json, const char *key, char *out, size_t n);

/* The number of elements of the top-level array `key`; -1 when absent. */
long pt_json_count(const char *json, const char *key);

/* The top-level unsigned integer `key`; false when absent. */
bool pt_json_u64(const char *json, const char *key, uint64_t *out);

/* The top-level boolean `key`; false when absent or not a boolean. */
bool pt_json_bool(const char *json, const char *key, bool *out);

#endif /* PULLTEXT_H */
