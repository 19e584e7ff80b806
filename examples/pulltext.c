/*
 * pulltext: see pulltext.h.
 */

#include "pulltext.h"

#include <stdlib.h>
#include <string.h>

/* vicpull functions that copy a pull's text into a caller buffer. */
typedef vic_result (*pull_text_fn)(const vic_pull *pull, char *buf,
                                   size_t len, size_t *out_n);

/* vic_last_error_message, shaped like the per-pull text functions. */
static vic_result last_error_fn(const vic_pull *pull, char *buf, size_t len,
                                size_t *out_n)
{
    (void)pull;
    return vic_last_error_message(buf, len, out_n);
}

/*
 * Ask for the length, allocate, then copy. The text may grow between the
 * two calls (a pull can finish in between), so BUFFER_TOO_SMALL simply
 * means "try again with the new length"; a few rounds always suffice.
 */
static char *fetch(pull_text_fn fn, const vic_pull *pull, vic_result *code)
{
    char *buf = NULL;
    size_t n = 0;
    vic_result rc = fn(pull, NULL, 0, &n);

    for (int round = 0; rc == VIC_RESULT_BUFFER_TOO_SMALL && round < 8;
         round++) {
        char *bigger = realloc(buf, n + 1);

        if (bigger == NULL) {
            free(buf);
            if (code != NULL)
                *code = VIC_RESULT_INTERNAL;
            return NULL;
        }
        buf = bigger;
        rc = fn(pull, buf, n + 1, &n);
    }
    if (code != NULL)
        *code = rc;
    if (rc != VIC_RESULT_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* A copy of a literal, for the paths that must never return NULL. */
static char *fallback(const char *text)
{
    char *copy = malloc(strlen(text) + 1);

    if (copy == NULL)
        abort();
    return strcpy(copy, text);
}

char *pt_last_error(void)
{
    char *text = fetch(last_error_fn, NULL, NULL);

    return text != NULL ? text : fallback("(no error message)");
}

char *pt_result_json(const vic_pull *pull, vic_result *code)
{
    return fetch(vic_pull_result_json, pull, code);
}

char *pt_error_message(const vic_pull *pull)
{
    char *text = fetch(vic_pull_error_message, pull, NULL);

    return text != NULL ? text : fallback("(no error message)");
}

/*
 * A small JSON reader: just enough to walk the top level of the result
 * object vicpull returns. It checks structure, not every JSON rule.
 */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

/* Just past the string that starts at p, or NULL if there is none. */
static const char *skip_string(const char *p)
{
    if (*p != '"')
        return NULL;
    for (p++; *p != '\0'; p++) {
        if (*p == '\\' && *++p == '\0')
            return NULL;
        if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Just past the value that starts at p, or NULL if it is malformed. */
static const char *skip_value(const char *p, int depth)
{
    /* Deep nesting never occurs in a result; refuse it, not the stack. */
    if (depth > 32)
        return NULL;
    p = skip_ws(p);
    if (*p == '"')
        return skip_string(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';

        p = skip_ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                p = skip_string(skip_ws(p));
                if (p == NULL)
                    return NULL;
                p = skip_ws(p);
                if (*p++ != ':')
                    return NULL;
            }
            p = skip_value(p, depth + 1);
            if (p == NULL)
                return NULL;
            p = skip_ws(p);
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
        }
    }
    /* A number or a literal: true, false, null. */
    const char *start = p;

    while (*p != '\0' && strchr("+-.0123456789Eaeflnrstu", *p) != NULL)
        p++;
    return p > start ? p : NULL;
}

/* The start of the value of top-level member `key`, or NULL. */
static const char *member(const char *json, const char *key)
{
    size_t klen = strlen(key);
    const char *p = skip_ws(json);

    if (*p != '{')
        return NULL;
    p = skip_ws(p + 1);
    while (*p == '"') {
        const char *end = skip_string(p);

        if (end == NULL)
            return NULL;
        /* Our keys never need escapes, so a byte compare is exact. */
        bool match = (size_t)(end - p) == klen + 2 &&
                     memcmp(p + 1, key, klen) == 0;
        p = skip_ws(end);
        if (*p != ':')
            return NULL;
        p = skip_ws(p + 1);
        if (match)
            return p;
        p = skip_value(p, 0);
        if (p == NULL)
            return NULL;
        p = skip_ws(p);
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1);
    }
    return NULL;
}

bool pt_json_string(const char *json, const char *key, char *out, size_t n)
{
    const char *p = member(json, key);
    const char *end = p != NULL ? skip_string(p) : NULL;

    if (end == NULL || n == 0)
        return false;
    size_t len = (size_t)(end - p) - 2;

    /* Escapes would need decoding; digests and names never have them. */
    if (len >= n || memchr(p + 1, '\\', len) != NULL)
        return false;
    memcpy(out, p + 1, len);
    out[len] = '\0';
    return true;
}

long pt_json_count(const char *json, const char *key)
{
    const char *p = member(json, key);
    long count = 0;

    if (p == NULL || *p != '[')
        return -1;
    p = skip_ws(p + 1);
    if (*p == ']')
        return 0;
    for (;;) {
        p = skip_value(p, 1);
        if (p == NULL)
            return -1;
        count++;
        p = skip_ws(p);
        if (*p == ']')
            return count;
        if (*p++ != ',')
            return -1;
    }
}

bool pt_json_u64(const char *json, const char *key, uint64_t *out)
{
    const char *p = member(json, key);
    char *end = NULL;

    if (p == NULL || *p < '0' || *p > '9')
        return false;
    unsigned long long v = strtoull(p, &end, 10);

    if (end == p)
        return false;
    *out = (uint64_t)v;
    return true;
}

bool pt_json_bool(const char *json, const char *key, bool *out)
{
    const char *p = member(json, key);

    if (p != NULL && strncmp(p, "true", 4) == 0) {
        *out = true;
        return true;
    }
    if (p != NULL && strncmp(p, "false", 5) == 0) {
        *out = false;
        return true;
    }
    return false;
}
