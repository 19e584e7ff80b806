/*
 * api_check: the C API's documented promises, checked from C without a
 * registry. The same file is compiled as C11 (and run, also under ASan and
 * UBSan) and as C++17 (syntax only), and it includes vicpull.h twice on
 * purpose to prove the include guard.
 *
 * Network: the only address used is a loopback port that was just free,
 * so connecting to it is refused at once. Usage: api_check SCRATCH_DIR
 * (pulls create their store there).
 */

#define _POSIX_C_SOURCE 200809L

#include "vicpull.h"
#include "vicpull.h" /* twice: the guard must make this a no-op */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef __cplusplus
#define CHECK_STATIC(e, m) static_assert(e, m)
#else
#define CHECK_STATIC(e, m) _Static_assert(e, m)
#endif

/* The header promises these values never change. */
CHECK_STATIC(VIC_RESULT_OK == 0, "OK is 0");
CHECK_STATIC(VIC_RESULT_CANCELLED == 11, "CANCELLED is 11");
CHECK_STATIC(VIC_RESULT_BUFFER_TOO_SMALL == 14, "BUFFER_TOO_SMALL is 14");
CHECK_STATIC(VIC_PULL_STATE_CANCELLED == 3, "state values are fixed");
CHECK_STATIC(VIC_PROGRESS_KIND_STATUS == 10, "kind values are fixed");
CHECK_STATIC(sizeof(vic_result) == 4, "vic_result is 32 bits");
CHECK_STATIC(sizeof(vic_progress_kind) == 4, "kinds are 32 bits");

static int failures;

#define EXPECT(cond)                                                        \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "api_check:%d: expected %s\n", __LINE__,        \
                    #cond);                                                 \
            failures++;                                                     \
        }                                                                   \
    } while (0)

/* The last error of this thread, copied into a static buffer. */
static const char *last_error(void)
{
    static char buf[1024];
    size_t n = 0;

    if (vic_last_error_message(buf, sizeof buf, &n) != VIC_RESULT_OK)
        return "(vic_last_error_message failed)";
    return buf;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* A loopback port nobody listens on: bind an ephemeral one, close it. */
static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void check_static_text(void)
{
    EXPECT(strcmp(vic_version(), VICPULL_VERSION) == 0);
    EXPECT(strcmp(vic_result_name(VIC_RESULT_DIGEST_MISMATCH),
                  "DIGEST_MISMATCH") == 0);
    EXPECT(strcmp(vic_result_name(9999), "UNKNOWN") == 0);
}

/* Start refusals leave *out alone and explain themselves. */
static void check_start_errors(void)
{
    vic_pull *const sentinel = (vic_pull *)&failures;
    vic_pull *p = sentinel;

    EXPECT(vic_pull_start(NULL, NULL, &p) == VIC_RESULT_INVALID_ARGUMENT);
    EXPECT(p == sentinel);
    EXPECT(starts_with(last_error(), "INVALID_ARGUMENT: "));

    EXPECT(vic_pull_start("{\"reference\":\"UPPER/case\",\"store\":\"/x\"}",
                          NULL, &p) == VIC_RESULT_BAD_REFERENCE);
    EXPECT(p == sentinel);
    EXPECT(starts_with(last_error(), "BAD_REFERENCE: "));

    EXPECT(vic_pull_start("{\"reference\":\"a\",\"store\":\"/x\",\"bogus\":1}",
                          NULL, &p) == VIC_RESULT_INVALID_ARGUMENT);
    EXPECT(strstr(last_error(), "bogus") != NULL);

    EXPECT(vic_pull_start("{\"reference\":\"a\",\"store\":\"/x\","
                          "\"max_concurrent_downloads\":0}",
                          NULL, &p) == VIC_RESULT_INVALID_ARGUMENT);
    EXPECT(vic_pull_start("not json", NULL, &p) ==
           VIC_RESULT_INVALID_ARGUMENT);
    EXPECT(vic_pull_start("{\"reference\":\"a\",\"store\":\"/x\"}", NULL,
                          NULL) == VIC_RESULT_INVALID_ARGUMENT);
    EXPECT(p == sentinel);
}

/* (buf, len, out_n): ask for the length, too small, exact fit. */
static void check_caller_buffer(void)
{
    vic_pull *p = NULL;
    char buf[1024];
    size_t n = 0, n2 = 0;

    vic_pull_start("{\"reference\":\"UPPER/case\",\"store\":\"/x\"}", NULL,
                   &p);
    EXPECT(vic_last_error_message(NULL, 0, &n) ==
           VIC_RESULT_BUFFER_TOO_SMALL);
    EXPECT(n > 0 && n < sizeof buf);
    /* len == n has no room for the NUL: still too small. */
    EXPECT(vic_last_error_message(buf, n, &n2) ==
           VIC_RESULT_BUFFER_TOO_SMALL);
    EXPECT(n2 == n);
    EXPECT(vic_last_error_message(buf, n + 1, &n2) == VIC_RESULT_OK);
    EXPECT(n2 == n && strlen(buf) == n);
    EXPECT(vic_last_error_message(buf, sizeof buf, NULL) ==
           VIC_RESULT_INVALID_ARGUMENT);
}

static void *fresh_thread_error_len(void *arg)
{
    size_t *n = (size_t *)arg;

    *n = 99;
    vic_last_error_message(NULL, 0, n);
    return NULL;
}

/* The last error is per thread: a new thread has none. */
static void check_error_is_per_thread(void)
{
    pthread_t t;
    size_t n = 0;

    EXPECT(pthread_create(&t, NULL, fresh_thread_error_len, &n) == 0);
    pthread_join(t, NULL);
    EXPECT(n == 0);
}

static void check_null_handles(void)
{
    vic_pull_status st;
    size_t n = 0;

    vic_pull_cancel(NULL);
    vic_pull_free(NULL);
    EXPECT(vic_pull_poll(NULL, 0, &st) == VIC_RESULT_INVALID_ARGUMENT);
    EXPECT(vic_pull_result_json(NULL, NULL, 0, &n) ==
           VIC_RESULT_INVALID_ARGUMENT);
    EXPECT(vic_pull_error_message(NULL, NULL, 0, &n) ==
           VIC_RESULT_INVALID_ARGUMENT);
    EXPECT(vic_log_set(NULL, NULL, 6) == VIC_RESULT_INVALID_ARGUMENT);
    EXPECT(vic_log_set(NULL, NULL, VIC_LOG_LEVEL_OFF) == VIC_RESULT_OK);
}

struct calls {
    pthread_mutex_t lock;
    int progress_after_done; /* must stay 0 */
    int done;
    int finalized;
    uint32_t result;
};

static void on_progress(void *user_data, const vic_progress *p)
{
    struct calls *c = (struct calls *)user_data;

    (void)p;
    pthread_mutex_lock(&c->lock);
    if (c->done > 0)
        c->progress_after_done++;
    pthread_mutex_unlock(&c->lock);
}

static void on_done(void *user_data, uint32_t result, const char *message)
{
    struct calls *c = (struct calls *)user_data;

    pthread_mutex_lock(&c->lock);
    c->done++;
    c->result = result;
    /* NULL exactly on success. */
    if ((result == VIC_RESULT_OK) != (message == NULL))
        c->progress_after_done += 1000;
    pthread_mutex_unlock(&c->lock);
}

static void on_finalize(void *user_data)
{
    struct calls *c = (struct calls *)user_data;

    pthread_mutex_lock(&c->lock);
    c->finalized++;
    pthread_mutex_unlock(&c->lock);
}

/* Members the header may add later stay NULL: set them by name. */
static vic_callbacks callbacks_for(struct calls *c)
{
    vic_callbacks cb;

    memset(&cb, 0, sizeof cb);
    cb.user_data = c;
    cb.on_progress = on_progress;
    cb.on_done = on_done;
    cb.finalizer = on_finalize;
    return cb;
}

/* The store for the pulls below: argv[1], a scratch directory. */
static const char *store;

/* Options for a pull whose registry refuses connections. */
static void refused_options(char *out, size_t len, int port, int attempts)
{
    /* The test script passes a mktemp path: no JSON escaping needed. */
    snprintf(out, len,
             "{\"reference\":\"127.0.0.1:%d/none/app:1\","
             "\"store\":\"%s\",\"plain_http\":true,\"max_attempts\":%d}",
             port, store, attempts);
}

/* Poll until terminal, up to about ten seconds. */
static vic_pull_status wait_terminal(vic_pull *p)
{
    vic_pull_status st;

    memset(&st, 0, sizeof st);
    for (int i = 0; i < 100; i++) {
        EXPECT(vic_pull_poll(p, 100, &st) == VIC_RESULT_OK);
        if (st.state != VIC_PULL_STATE_PENDING)
            break;
    }
    return st;
}

/* Log lines the host sink got; it may run on any thread at once. */
static struct {
    pthread_mutex_t lock;
    int lines;
    int bad; /* lines without a "vicpull" target or a message */
} logs = {PTHREAD_MUTEX_INITIALIZER, 0, 0};

static void on_log(void *user_data, const vic_log_params *params)
{
    (void)user_data;
    pthread_mutex_lock(&logs.lock);
    logs.lines++;
    if (params->target == NULL || params->message == NULL ||
        strncmp(params->target, "vicpull", 7) != 0 ||
        params->level > VIC_LOG_LEVEL_INFO)
        logs.bad++;
    pthread_mutex_unlock(&logs.lock);
}

/* One attempt, connection refused: FAILED with NETWORK, callbacks once. */
static void check_failed_pull(int port)
{
    struct calls c = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    vic_callbacks cb = callbacks_for(&c);
    vic_pull *p = NULL;
    char opts[256], buf[512];
    size_t n = 0;

    refused_options(opts, sizeof opts, port, 1);
    EXPECT(vic_pull_start(opts, &cb, &p) == VIC_RESULT_OK);
    if (p == NULL)
        return;
    vic_pull_status st = wait_terminal(p);

    EXPECT(st.state == VIC_PULL_STATE_FAILED);
    EXPECT(st.result == VIC_RESULT_NETWORK);
    /* Terminal means on_done and the finalizer already returned. */
    EXPECT(c.done == 1 && c.finalized == 1);
    EXPECT(c.result == VIC_RESULT_NETWORK);
    EXPECT(vic_pull_error_message(p, buf, sizeof buf, &n) == VIC_RESULT_OK);
    EXPECT(n > 0 && strlen(buf) == n);
    EXPECT(vic_pull_result_json(p, buf, sizeof buf, &n) ==
           VIC_RESULT_INVALID_ARGUMENT);
    /* Polling after the end is defined and stays terminal. */
    EXPECT(vic_pull_poll(p, 0, &st) == VIC_RESULT_OK);
    EXPECT(st.state == VIC_PULL_STATE_FAILED);
    vic_pull_cancel(p); /* a finished pull is unaffected */
    EXPECT(vic_pull_poll(p, 0, &st) == VIC_RESULT_OK);
    EXPECT(st.result == VIC_RESULT_NETWORK);
    vic_pull_free(p);
    EXPECT(c.done == 1 && c.finalized == 1 && c.progress_after_done == 0);
}

/* Many attempts with back-off: cancel must end it promptly. */
static void check_cancelled_pull(int port)
{
    struct calls c = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    vic_callbacks cb = callbacks_for(&c);
    vic_pull *p = NULL;
    char opts[256], buf[512];
    size_t n = 0;

    refused_options(opts, sizeof opts, port, 100);
    EXPECT(vic_pull_start(opts, &cb, &p) == VIC_RESULT_OK);
    if (p == NULL)
        return;
    /* Still retrying: no result yet. */
    EXPECT(vic_pull_result_json(p, buf, sizeof buf, &n) ==
           VIC_RESULT_PENDING);
    vic_pull_cancel(p);
    vic_pull_cancel(p); /* idempotent */
    vic_pull_status st = wait_terminal(p);

    EXPECT(st.state == VIC_PULL_STATE_CANCELLED);
    EXPECT(st.result == VIC_RESULT_CANCELLED);
    EXPECT(c.done == 1 && c.finalized == 1);
    EXPECT(vic_pull_error_message(p, buf, sizeof buf, &n) == VIC_RESULT_OK);
    EXPECT(n > 0);
    vic_pull_free(p);
    EXPECT(c.done == 1 && c.finalized == 1 && c.progress_after_done == 0);
}

/* Free while running: on_done and the finalizer still run, once. */
static void check_free_while_running(int port)
{
    struct calls c = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    vic_callbacks cb = callbacks_for(&c);
    vic_pull *p = NULL;
    char opts[256];

    refused_options(opts, sizeof opts, port, 100);
    EXPECT(vic_pull_start(opts, &cb, &p) == VIC_RESULT_OK);
    vic_pull_free(p);
    EXPECT(c.done == 1 && c.finalized == 1);
    EXPECT(c.result == VIC_RESULT_CANCELLED);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: api_check SCRATCH_DIR\n");
        return 2;
    }
    store = argv[1];

    int port = free_port();

    check_static_text();
    check_start_errors();
    check_caller_buffer();
    check_error_is_per_thread();
    check_null_handles();
    EXPECT(port > 0);
    if (port > 0) {
        /* A failed pull logs at INFO: it must reach our sink. */
        EXPECT(vic_log_set(on_log, NULL, VIC_LOG_LEVEL_INFO) ==
               VIC_RESULT_OK);
        check_failed_pull(port);
        EXPECT(vic_log_set(NULL, NULL, VIC_LOG_LEVEL_OFF) == VIC_RESULT_OK);
        pthread_mutex_lock(&logs.lock);
        EXPECT(logs.lines > 0 && logs.bad == 0);
        pthread_mutex_unlock(&logs.lock);
        check_cancelled_pull(port);
        check_free_while_running(port);
    }
    if (failures > 0) {
        fprintf(stderr, "api_check: %d check(s) failed\n", failures);
        return 1;
    }
    printf("api_check: all checks passed\n");
    return 0;
}
