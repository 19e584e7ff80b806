/*
 * pull: pull images into an OCI layout with vicpull, showing progress the
 * way `docker pull` does.
 *
 *   pull [--plain-http] [--platform P] [--max-concurrent N] [--json]
 *        [--log LEVEL] --store DIR REF [REF...]
 *
 * All references are pulled at once, in one process, so layers they share
 * are downloaded once. On a terminal one line per layer is redrawn in
 * place; into a pipe every status change is one plain line. Ctrl-C cancels
 * every pull and exits 130.
 *
 * Threads: vicpull calls on_progress / on_done / the finalizer on one
 * library thread per pull, so different pulls call us concurrently. All
 * shared state and all output sit behind `ui.lock`. The main thread starts
 * the pulls, polls them, redraws the terminal and cancels on a signal.
 */

#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "pulltext.h"
#include "vicpull.h"

/* A pipe gets at most two Downloading lines per layer per second. */
#define PIPE_INTERVAL_MS 500
/* The main thread wakes this often to redraw and to notice Ctrl-C. */
#define TICK_MS 100
/* Width of the progress bar between the brackets. */
#define BAR_WIDTH 30
/* Longest line we render; the terminal width cuts it further. */
#define LINE_MAX_BYTES 512

struct layer {
    char *digest;       /* "sha256:...", as vicpull names it */
    char id[13];        /* docker's short id: the first 12 hex digits */
    uint32_t kind;      /* the last vic_progress_kind seen */
    char *status;       /* vicpull's wording for that event */
    uint64_t current;   /* bytes so far while Downloading */
    uint64_t total;     /* layer size, 0 when not known */
    int64_t printed_ms; /* pipe: when Downloading was printed; -1 never */
};

struct job {
    const char *ref;        /* the reference as typed */
    vic_pull *pull;         /* NULL when vic_pull_start refused it */
    struct layer *layers;   /* in the order vicpull first named them */
    size_t nlayers;
    size_t cap;
    char *from;             /* "TAG: Pulling from REPO" */
    char *digest;           /* "Digest: sha256:..." */
    char *status;           /* "Status: ..." */
    int finalized;          /* finalizer calls; vicpull promises one */
    vic_pull_status st;     /* the last poll, terminal at the end */
};

static struct {
    pthread_mutex_t lock; /* guards every field here and every job */
    FILE *out;            /* progress and summaries */
    bool tty;             /* redraw in place instead of appending lines */
    bool prefix;          /* several references: name the ref per line */
    bool dirty;           /* tty: something changed since the redraw */
    int drawn;            /* tty: lines the last redraw left on screen */
    struct job *jobs;
    size_t njobs;
} ui = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The first SIGINT/SIGTERM; the main loop then cancels every pull. */
static volatile sig_atomic_t stop_signal;
/* Set a second after cancelling: from then on a signal kills at once. */
static volatile sig_atomic_t force_quit;

static void on_signal(int sig)
{
    /* Wrappers such as timeout(1) may deliver one Ctrl-C twice within
     * microseconds; only a signal after the grace second means "now". */
    if (force_quit) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    if (stop_signal == 0)
        stop_signal = sig;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        /* Callbacks have no way to report this; stop loudly. */
        fputs("pull: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    return strcpy(xrealloc(NULL, strlen(s) + 1), s);
}

/* Replace *slot with a copy of text. */
static void set_text(char **slot, const char *text)
{
    free(*slot);
    *slot = xstrdup(text != NULL ? text : "");
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sizes the way docker prints them: decimal units, three digits. */
static void human_size(uint64_t n, char *out, size_t len)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    size_t u = 0;

    while (v >= 999.5 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1000.0;
        u++;
    }
    if (u == 0)
        snprintf(out, len, "%" PRIu64 "B", n);
    else
        snprintf(out, len, "%.3g%s", v, units[u]);
}

/* ---- rendering ------------------------------------------------------- */

static bool is_downloading(const struct layer *l)
{
    return l->kind == VIC_PROGRESS_KIND_DOWNLOADING;
}

/* One layer as a line; `bar` draws [===>  ] instead of bare numbers. */
static void render_layer(const struct layer *l, bool bar, char *out,
                         size_t len)
{
    char cur[16], tot[16];

    if (!is_downloading(l)) {
        snprintf(out, len, "%s: %s", l->id, l->status);
        return;
    }
    human_size(l->current, cur, sizeof cur);
    if (l->total == 0) {
        snprintf(out, len, "%s: Downloading %s", l->id, cur);
        return;
    }
    human_size(l->total, tot, sizeof tot);
    if (!bar) {
        snprintf(out, len, "%s: Downloading %s/%s", l->id, cur, tot);
        return;
    }
    char cells[BAR_WIDTH + 1];
    uint64_t cur_capped = l->current < l->total ? l->current : l->total;
    size_t filled = (size_t)(cur_capped * BAR_WIDTH / l->total);

    memset(cells, ' ', BAR_WIDTH);
    cells[BAR_WIDTH] = '\0';
    if (filled > 0) {
        memset(cells, '=', filled);
        if (filled < BAR_WIDTH)
            cells[filled - 1] = '>';
    }
    snprintf(out, len, "%s: Downloading [%s] %s/%s", l->id, cells, cur,
             tot);
}

/* Pipe mode: print one finished line, named by its ref when needed. */
static void emit_line(const struct job *job, const char *text)
{
    if (ui.prefix)
        fprintf(ui.out, "%s: %s\n", job->ref, text);
    else
        fprintf(ui.out, "%s\n", text);
    fflush(ui.out);
}

static void terminal_size(int *rows, int *cols)
{
    struct winsize ws;

    *rows = 24;
    *cols = 80;
    if (ioctl(fileno(ui.out), TIOCGWINSZ, &ws) == 0 && ws.ws_row > 1 &&
        ws.ws_col > 10) {
        *rows = ws.ws_row;
        *cols = ws.ws_col;
    }
}

/*
 * Lines of one job, in screen order. With `fn` NULL it only counts them.
 * The first line names the ref when several refs share the screen.
 */
static int job_lines(const struct job *job, void (*fn)(const char *, void *),
                     void *arg)
{
    char line[LINE_MAX_BYTES];
    int n = 0;

    if (job->from != NULL) {
        if (fn != NULL) {
            if (ui.prefix)
                snprintf(line, sizeof line, "%s: %s", job->ref, job->from);
            else
                snprintf(line, sizeof line, "%s", job->from);
            fn(line, arg);
        }
        n++;
    }
    for (size_t i = 0; i < job->nlayers; i++, n++) {
        if (fn != NULL) {
            render_layer(&job->layers[i], true, line, sizeof line);
            fn(line, arg);
        }
    }
    const char *tail[] = {job->digest, job->status};

    for (size_t i = 0; i < 2; i++) {
        if (tail[i] != NULL) {
            if (fn != NULL)
                fn(tail[i], arg);
            n++;
        }
    }
    return n;
}

struct screen {
    int index; /* line number within the whole block */
    int first; /* lines before this one scrolled away; skip them */
    int cols;
};

static void draw_line(const char *text, void *arg)
{
    struct screen *s = arg;

    /* A wrapped line would throw off the cursor-up count: cut it. */
    if (s->index++ >= s->first)
        fprintf(ui.out, "\r\033[2K%.*s\n", s->cols - 1, text);
}

/*
 * Tty mode: move up over what we drew last time and draw every job again.
 * Only the bottom rows-1 lines fit; older ones have scrolled off already.
 */
static void redraw(void)
{
    int rows, cols, total = 0;

    terminal_size(&rows, &cols);
    for (size_t i = 0; i < ui.njobs; i++)
        total += job_lines(&ui.jobs[i], NULL, NULL);

    struct screen s = {0, total > rows - 1 ? total - (rows - 1) : 0, cols};

    if (ui.drawn > 0)
        fprintf(ui.out, "\033[%dA", ui.drawn);
    for (size_t i = 0; i < ui.njobs; i++)
        job_lines(&ui.jobs[i], draw_line, &s);
    ui.drawn = total - s.first;
    ui.dirty = false;
    fflush(ui.out);
}

/* ---- callbacks (library threads; ui.lock held inside) ----------------- */

static struct layer *find_layer(struct job *job, const char *digest)
{
    for (size_t i = 0; i < job->nlayers; i++)
        if (strcmp(job->layers[i].digest, digest) == 0)
            return &job->layers[i];
    if (job->nlayers == job->cap) {
        job->cap = job->cap ? job->cap * 2 : 8;
        job->layers = xrealloc(job->layers, job->cap * sizeof *job->layers);
    }

    struct layer *l = &job->layers[job->nlayers++];
    const char *hex = strchr(digest, ':');

    memset(l, 0, sizeof *l);
    l->digest = xstrdup(digest);
    snprintf(l->id, sizeof l->id, "%s", hex != NULL ? hex + 1 : digest);
    l->kind = UINT32_MAX; /* no event yet */
    l->printed_ms = -1;
    return l;
}

static void layer_event(struct job *job, const vic_progress *p)
{
    struct layer *l = find_layer(job, p->layer_digest);
    /* Retrying carries a new reason each time; show every one. */
    bool changed = p->kind != l->kind || p->kind == VIC_PROGRESS_KIND_RETRYING;

    l->kind = p->kind;
    set_text(&l->status, p->message);
    if (p->kind == VIC_PROGRESS_KIND_DOWNLOADING) {
        l->current = p->current;
        l->total = p->total;
    } else if (p->kind == VIC_PROGRESS_KIND_PULLING_FS_LAYER) {
        l->total = p->total;
    }
    if (ui.tty) {
        ui.dirty = true;
        return;
    }

    if (p->kind == VIC_PROGRESS_KIND_DOWNLOADING) {
        int64_t now = now_ms();
        bool last = l->total > 0 && l->current >= l->total;

        /* Bytes flow fast; a log only needs a few samples, and the end. */
        if (!changed && !last && now - l->printed_ms < PIPE_INTERVAL_MS)
            return;
        l->printed_ms = now;
    } else if (!changed) {
        return;
    }

    char line[LINE_MAX_BYTES];

    render_layer(l, false, line, sizeof line);
    emit_line(job, line);
}

static void image_event(struct job *job, const vic_progress *p)
{
    char **slot = NULL;

    switch (p->kind) {
    case VIC_PROGRESS_KIND_PULLING_FROM:
        slot = &job->from;
        break;
    case VIC_PROGRESS_KIND_DIGEST:
        slot = &job->digest;
        break;
    case VIC_PROGRESS_KIND_STATUS:
        slot = &job->status;
        break;
    default:
        break; /* a kind newer than this program: still print it */
    }
    if (slot != NULL)
        set_text(slot, p->message);
    if (ui.tty && slot != NULL) {
        ui.dirty = true;
        return;
    }
    emit_line(job, p->message);
    if (ui.tty) {
        /* The line went below the block; redraw the block below it. */
        ui.drawn = 0;
        ui.dirty = true;
    }
}

static void on_progress(void *user_data, const vic_progress *p)
{
    struct job *job = user_data;

    pthread_mutex_lock(&ui.lock);
    if (p->layer_digest != NULL)
        layer_event(job, p);
    else
        image_event(job, p);
    pthread_mutex_unlock(&ui.lock);
}

static void on_done(void *user_data, uint32_t result, const char *message)
{
    struct job *job = user_data;

    /* The outcome is read later, through vic_pull_poll and
     * vic_pull_error_message; here it only changes the screen. */
    (void)job;
    (void)result;
    (void)message;
    pthread_mutex_lock(&ui.lock);
    ui.dirty = true;
    pthread_mutex_unlock(&ui.lock);
}

static void on_finalize(void *user_data)
{
    struct job *job = user_data;

    pthread_mutex_lock(&ui.lock);
    job->finalized++;
    pthread_mutex_unlock(&ui.lock);
}

/* vic_log_set sink: any library thread, concurrently with everything. */
static void on_log(void *user_data, const vic_log_params *params)
{
    static const char *const names[] = {"OFF",  "ERROR", "WARN",
                                        "INFO", "DEBUG", "TRACE"};
    const char *level = params->level < 6 ? names[params->level] : "?";

    (void)user_data;
    pthread_mutex_lock(&ui.lock);
    fprintf(stderr, "vicpull %s %s: %s\n", level, params->target,
            params->message);
    /* The log line sits where the block was; redraw below it. */
    ui.drawn = 0;
    ui.dirty = ui.tty;
    pthread_mutex_unlock(&ui.lock);
}

/* ---- options JSON ---------------------------------------------------- */

struct buf {
    char *p;
    size_t n;
    size_t cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* A JSON string literal; bytes >= 0x80 pass through (vicpull wants UTF-8
 * and says INVALID_ARGUMENT when it is not). */
static void buf_json(struct buf *b, const char *s)
{
    buf_str(b, "\"");
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            buf_add(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            buf_str(b, esc);
        } else {
            buf_add(b, s, 1);
        }
    }
    buf_str(b, "\"");
}

struct args {
    const char *store;
    const char *platform;
    const char *max_concurrent;
    const char *log;
    bool plain_http;
    bool json;
    char **refs;
    int nrefs;
};

static char *options_json(const struct args *a, const char *ref)
{
    struct buf b = {NULL, 0, 0};

    buf_str(&b, "{\"reference\":");
    buf_json(&b, ref);
    buf_str(&b, ",\"store\":");
    buf_json(&b, a->store);
    if (a->plain_http)
        buf_str(&b, ",\"plain_http\":true");
    if (a->platform != NULL) {
        buf_str(&b, ",\"platform\":");
        buf_json(&b, a->platform);
    }
    if (a->max_concurrent != NULL) {
        /* Already checked to be digits; vicpull checks the range. */
        buf_str(&b, ",\"max_concurrent_downloads\":");
        buf_str(&b, a->max_concurrent);
    }
    buf_str(&b, "}");
    return b.p;
}

/* ---- command line ---------------------------------------------------- */

static const char usage[] =
    "usage: pull [--plain-http] [--platform OS/ARCH[/VARIANT]]\n"
    "            [--max-concurrent N] [--json] [--log LEVEL]\n"
    "            --store DIR REF [REF...]\n"
    "       pull --version\n"
    "Pulls every REF at once into the OCI layout DIR.\n"
    "--json prints each result JSON on stdout (progress goes to stderr).\n"
    "--log error|warn|info|debug|trace sends vicpull's log to stderr.\n";

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "pull: %s%s%s\n%s", what, arg ? " " : "",
            arg ? arg : "", usage);
    return 2;
}

static bool all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static int log_level(const char *name)
{
    static const char *const names[] = {"off",  "error", "warn",
                                        "info", "debug", "trace"};

    for (int i = 0; i < 6; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

/*
 * Options may come before or after the references ("--" ends them), so a
 * stray value after a reference is never taken for an image name.
 * Returns 0 on success, else the exit code for a usage error.
 */
static int parse_args(int argc, char **argv, struct args *a)
{
    bool options = true;

    a->refs = xrealloc(NULL, (size_t)argc * sizeof *a->refs);
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        bool takes_value = strcmp(opt, "--store") == 0 ||
                           strcmp(opt, "--platform") == 0 ||
                           strcmp(opt, "--max-concurrent") == 0 ||
                           strcmp(opt, "--log") == 0;

        if (!options || strncmp(opt, "--", 2) != 0) {
            a->refs[a->nrefs++] = argv[i];
            continue;
        }
        if (strcmp(opt, "--") == 0) {
            options = false;
            continue;
        }
        if (takes_value && i + 1 >= argc)
            return usage_error("missing value for", opt);
        if (strcmp(opt, "--plain-http") == 0)
            a->plain_http = true;
        else if (strcmp(opt, "--json") == 0)
            a->json = true;
        else if (strcmp(opt, "--store") == 0)
            a->store = argv[++i];
        else if (strcmp(opt, "--platform") == 0)
            a->platform = argv[++i];
        else if (strcmp(opt, "--max-concurrent") == 0)
            a->max_concurrent = argv[++i];
        else if (strcmp(opt, "--log") == 0)
            a->log = argv[++i];
        else
            return usage_error("unknown option", opt);
    }
    if (a->store == NULL)
        return usage_error("--store DIR is required", NULL);
    if (a->nrefs == 0)
        return usage_error("no image reference given", NULL);
    if (a->max_concurrent != NULL && !all_digits(a->max_concurrent))
        return usage_error("--max-concurrent wants a number, not",
                           a->max_concurrent);
    if (a->log != NULL && log_level(a->log) < 0)
        return usage_error("unknown --log level", a->log);
    return 0;
}

static int print_version(void)
{
    printf("pull (vicpull library %s, header %s)\n", vic_version(),
           VICPULL_VERSION);
    /* A library from another build than the header is a packaging bug. */
    return strcmp(vic_version(), VICPULL_VERSION) == 0 ? 0 : 1;
}

/* ---- main ------------------------------------------------------------ */

static void install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Start every pull; a refused reference is reported and skipped. */
static int start_all(const struct args *a)
{
    int failed = 0;

    for (size_t i = 0; i < ui.njobs; i++) {
        struct job *job = &ui.jobs[i];
        char *json = options_json(a, job->ref);
        vic_callbacks cb;

        /* Members the header may add later stay NULL: set by name. */
        memset(&cb, 0, sizeof cb);
        cb.user_data = job;
        cb.on_progress = on_progress;
        cb.on_done = on_done;
        cb.finalizer = on_finalize;

        if (vic_pull_start(json, &cb, &job->pull) != VIC_RESULT_OK) {
            char *msg = pt_last_error();

            pthread_mutex_lock(&ui.lock);
            fprintf(stderr, "%s: %s\n", job->ref, msg);
            ui.drawn = 0;
            pthread_mutex_unlock(&ui.lock);
            free(msg);
            job->pull = NULL;
            failed++;
        }
        free(json);
    }
    return failed;
}

/* Poll until every pull is terminal; cancel them all on a signal. */
static void wait_all(void)
{
    int64_t cancelled_at = -1;

    for (;;) {
        vic_pull *waiting = NULL;

        if (stop_signal != 0 && cancelled_at < 0) {
            for (size_t i = 0; i < ui.njobs; i++)
                vic_pull_cancel(ui.jobs[i].pull);
            cancelled_at = now_ms();
        }
        /* Should cancelling ever hang, the next Ctrl-C still works. */
        if (cancelled_at >= 0 && now_ms() - cancelled_at > 1000)
            force_quit = 1;
        for (size_t i = 0; i < ui.njobs; i++) {
            struct job *job = &ui.jobs[i];

            if (job->pull == NULL)
                continue;
            if (vic_pull_poll(job->pull, 0, &job->st) != VIC_RESULT_OK) {
                char *msg = pt_last_error();

                /* Only NULL pointers fail here: a bug in this program. */
                fprintf(stderr, "pull: vic_pull_poll: %s\n", msg);
                free(msg);
                abort();
            }
            if (job->st.state == VIC_PULL_STATE_PENDING && waiting == NULL)
                waiting = job->pull;
        }
        pthread_mutex_lock(&ui.lock);
        if (ui.tty && ui.dirty)
            redraw();
        pthread_mutex_unlock(&ui.lock);
        if (waiting == NULL)
            return;

        /* Sleep inside vicpull: wakes early when this pull finishes. */
        vic_pull_status ignored;

        vic_pull_poll(waiting, TICK_MS, &ignored);
    }
}

/* "REF: digest sha256:... (3 layers, 45.6MB downloaded)". */
static void print_summary(const struct job *job, const char *json)
{
    char digest[160], size[16];
    long layers = pt_json_count(json, "layers");
    uint64_t bytes = 0;
    bool fresh = false;

    if (!pt_json_string(json, "digest", digest, sizeof digest))
        snprintf(digest, sizeof digest, "(unknown)");
    pt_json_u64(json, "bytes_downloaded", &bytes);
    pt_json_bool(json, "up_to_date", &fresh);
    human_size(bytes, size, sizeof size);
    fprintf(ui.out, "%s: digest %s (%ld layer%s, %s%s)\n", job->ref,
            digest, layers, layers == 1 ? "" : "s",
            fresh ? "up to date" : size, fresh ? "" : " downloaded");
}

/* Report one finished pull; returns true when it succeeded. */
static bool report(const struct job *job, bool json_out)
{
    if (job->st.state == VIC_PULL_STATE_DONE) {
        vic_result rc;
        char *json = pt_result_json(job->pull, &rc);

        if (json == NULL) {
            char *msg = pt_last_error();

            fprintf(stderr, "%s: cannot read the result: %s\n", job->ref,
                    msg);
            free(msg);
            return false;
        }
        print_summary(job, json);
        if (json_out)
            printf("%s\n", json);
        free(json);
        return true;
    }

    char *msg = pt_error_message(job->pull);

    fprintf(stderr, "%s: %s: %s\n", job->ref, vic_result_name(job->st.result),
            msg);
    free(msg);
    return false;
}

static void free_job(struct job *job)
{
    for (size_t i = 0; i < job->nlayers; i++) {
        free(job->layers[i].digest);
        free(job->layers[i].status);
    }
    free(job->layers);
    free(job->from);
    free(job->digest);
    free(job->status);
}

int main(int argc, char **argv)
{
    struct args a;
    int exit_code = 0;

    memset(&a, 0, sizeof a);
    if (argc == 2 && strcmp(argv[1], "--version") == 0)
        return print_version();
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    int bad = parse_args(argc, argv, &a);

    if (bad != 0) {
        free(a.refs);
        return bad;
    }

    /* With --json, stdout carries only JSON; progress moves to stderr. */
    ui.out = a.json ? stderr : stdout;
    ui.tty = isatty(fileno(ui.out)) != 0;
    ui.prefix = a.nrefs > 1;
    ui.njobs = (size_t)a.nrefs;
    ui.jobs = xrealloc(NULL, ui.njobs * sizeof *ui.jobs);
    memset(ui.jobs, 0, ui.njobs * sizeof *ui.jobs);
    for (size_t i = 0; i < ui.njobs; i++)
        ui.jobs[i].ref = a.refs[i];

    if (a.log != NULL &&
        vic_log_set(on_log, NULL, (uint32_t)log_level(a.log)) !=
            VIC_RESULT_OK) {
        char *msg = pt_last_error();

        fprintf(stderr, "pull: vic_log_set: %s\n", msg);
        free(msg);
        return 1;
    }
    install_signals();
    if (start_all(&a) > 0)
        exit_code = 1;
    wait_all();

    for (size_t i = 0; i < ui.njobs; i++) {
        struct job *job = &ui.jobs[i];

        if (job->pull == NULL)
            continue;
        if (!report(job, a.json))
            exit_code = 1;
        /* Terminal already, so this only releases the handle. */
        vic_pull_free(job->pull);
        pthread_mutex_lock(&ui.lock);
        int finalized = job->finalized;
        pthread_mutex_unlock(&ui.lock);

        if (finalized != 1) {
            fprintf(stderr, "%s: the finalizer ran %d times, not once\n",
                    job->ref, finalized);
            exit_code = 1;
        }
    }
    if (a.log != NULL)
        vic_log_set(NULL, NULL, VIC_LOG_LEVEL_OFF);
    for (size_t i = 0; i < ui.njobs; i++)
        free_job(&ui.jobs[i]);
    free(ui.jobs);
    free(a.refs);

    if (stop_signal != 0) {
        fprintf(stderr, "pull: interrupted; every pull was cancelled\n");
        return 128 + stop_signal;
    }
    return exit_code;
}
