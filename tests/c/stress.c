/*
 * Stress the C API: THREADS host threads start PULLS pulls in total,
 * cancelling some at random moments and letting others complete, all
 * sharing one store (so they share downloads). Checks that every handle
 * reaches a terminal state, that on_done and the finalizer run exactly
 * once per pull and nothing runs after them, and that callbacks of one
 * pull never overlap. Every 10 consecutive pulls share a fresh store
 * directory, so most pulls really download (and share downloads) while
 * others cancel them. Build with -fsanitize=address to catch invalid
 * access and leaks.
 *
 *   stress STORE THREADS PULLS REF [REF...]
 */
#define _DEFAULT_SOURCE /* usleep, clock_gettime */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vicpull.h"

struct record {
    atomic_int in_callback;
    atomic_int done;
    atomic_int finalized;
    atomic_int overlap;
    atomic_int late;
    atomic_uint result;
};

static atomic_int next_pull;
static atomic_int n_ok, n_cancelled, n_failed, n_errors;
static int total_pulls;
static const char *store;
static char **refs;
static int n_refs;

static void enter(struct record *r)
{
    if (atomic_fetch_add(&r->in_callback, 1) != 0)
        atomic_fetch_add(&r->overlap, 1);
    if (atomic_load(&r->done) || atomic_load(&r->finalized))
        atomic_fetch_add(&r->late, 1);
}

static void leave(struct record *r)
{
    atomic_fetch_sub(&r->in_callback, 1);
}

static void on_progress(void *user, const vic_progress *p)
{
    struct record *r = user;
    enter(r);
    (void)p;
    leave(r);
}

static void on_done(void *user, uint32_t result, const char *msg)
{
    struct record *r = user;
    enter(r);
    (void)msg;
    atomic_store(&r->result, result);
    atomic_fetch_add(&r->done, 1);
    leave(r);
}

static void finalize(void *user)
{
    struct record *r = user;
    if (atomic_fetch_add(&r->finalized, 1) != 0)
        atomic_fetch_add(&r->late, 1);
}

static unsigned next_rand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u;
    char opts[1024];
    for (;;) {
        int i = atomic_fetch_add(&next_pull, 1);
        if (i >= total_pulls)
            break;
        struct record *r = calloc(1, sizeof *r);
        snprintf(opts, sizeof opts,
                 "{\"reference\":\"%s\",\"store\":\"%s/s%d\","
                 "\"plain_http\":true,\"max_attempts\":2}",
                 refs[i % n_refs], store, i / 10);
        vic_callbacks cb = {r, on_progress, on_done, finalize, NULL};
        vic_pull *p = NULL;
        if (vic_pull_start(opts, &cb, &p) != VIC_RESULT_OK) {
            atomic_fetch_add(&n_errors, 1);
            free(r);
            continue;
        }
        unsigned what = next_rand(&seed) % 4;
        if (what < 2) {
            /* cancel after 0-40 ms, sometimes twice */
            usleep((next_rand(&seed) % 40) * 1000);
            vic_pull_cancel(p);
            if (what == 1)
                vic_pull_cancel(p);
        }
        vic_pull_status st;
        if (what == 3) {
            /* free while it may still run: free must cancel and drain */
            usleep((next_rand(&seed) % 20) * 1000);
        } else {
            do {
                if (vic_pull_poll(p, 200, &st) != VIC_RESULT_OK) {
                    atomic_fetch_add(&n_errors, 1);
                    break;
                }
            } while (st.state == VIC_PULL_STATE_PENDING);
        }
        vic_pull_free(p);
        if (atomic_load(&r->done) != 1 || atomic_load(&r->finalized) != 1 ||
            atomic_load(&r->overlap) || atomic_load(&r->late)) {
            fprintf(stderr, "pull %d: done=%d finalized=%d overlap=%d late=%d\n",
                    i, atomic_load(&r->done), atomic_load(&r->finalized),
                    atomic_load(&r->overlap), atomic_load(&r->late));
            atomic_fetch_add(&n_errors, 1);
        }
        switch (atomic_load(&r->result)) {
        case VIC_RESULT_OK: atomic_fetch_add(&n_ok, 1); break;
        case VIC_RESULT_CANCELLED: atomic_fetch_add(&n_cancelled, 1); break;
        default: atomic_fetch_add(&n_failed, 1); break;
        }
        free(r);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: stress STORE THREADS PULLS REF [REF...]\n");
        return 2;
    }
    store = argv[1];
    int threads = atoi(argv[2]);
    total_pulls = atoi(argv[3]);
    refs = argv + 4;
    n_refs = argc - 4;
    if (threads < 1 || threads > 64 || total_pulls < 1)
        return 2;
    pthread_t tid[64];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, worker, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) +
                  (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("stress: %d pulls on %d threads in %.2f s: %d ok, %d cancelled, "
           "%d failed, %d contract errors\n",
           total_pulls, threads, secs, atomic_load(&n_ok),
           atomic_load(&n_cancelled), atomic_load(&n_failed),
           atomic_load(&n_errors));
    /* Failed pulls would mean a bug too: the registry is local and healthy. */
    return (atomic_load(&n_errors) || atomic_load(&n_failed)) ? 1 : 0;
}
