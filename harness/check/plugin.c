/* Host plugins: loading and isolation (see plugin.h). */
#include "check.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- Loading ------------------------------------------------------------------------------------------------ */

HRESULT hm__host_open(const char *library, const char *options, IHostMemoryManager **out, char *err, size_t err_len)
{
    *out = NULL;
    IHostMemoryManager *manager = NULL;
    if (!library) {
        HRESULT hr = HostMemCreateManager(options, &manager);
        if (FAILED(hr) || !manager) {
            snprintf(err, err_len, "the built-in manager refused options '%s': %s (%s)", options ? options : "",
                     HostMemLastError(), hm_hr_name(hr));
            return FAILED(hr) ? hr : E_POINTER;
        }
        *out = manager;
        return S_OK;
    }
    /* A name without a slash is searched in the library path only by dlopen; `--host libmyhost.so` means the file
     * in the current directory when there is one there, as a user expects. */
    char local[4096];
    const char *path = library;
    if (!strchr(library, '/') && access(library, F_OK) == 0 &&
        (size_t)snprintf(local, sizeof local, "./%s", library) < sizeof local)
        path = local;
    /* RTLD_LOCAL keeps the plugin's symbols (its own HostMemCreateManager) out of everyone else's way. */
    const char *outer = hm__isolate_enter("dlopen (the library's constructors)");
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    hm__isolate_leave(outer);
    if (!lib) {
        snprintf(err, err_len, "cannot load host library '%s': %s%s", library, dlerror(),
                 strchr(library, '/') ? ""
                                      : " (a name without a slash is looked for in the current directory, then in the "
                                        "library path)");
        return E_FAIL;
    }
    HostMemCreateManagerFn factory = (HostMemCreateManagerFn)(uintptr_t)dlsym(lib, "HostMemCreateManager");
    if (!factory) {
        snprintf(err, err_len,
                 "host library '%s' does not export HostMemCreateManager (a host plugin exports\n"
                 "  HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **ppManager);)",
                 library);
        return E_FAIL;
    }
    outer = hm__isolate_enter("HostMemCreateManager");
    HRESULT hr = factory(options, &manager);
    hm__isolate_leave(outer);
    if (FAILED(hr) || !manager) {
        const char *(*last_error)(void) = (const char *(*)(void))(uintptr_t)dlsym(lib, "HostMemLastError");
        const char *said = last_error ? last_error() : NULL;
        snprintf(err, err_len, "host library '%s': HostMemCreateManager('%s') failed: %s%s%s%s", library,
                 options ? options : "", hm_hr_name(hr), said && *said ? ": " : "", said ? said : "",
                 SUCCEEDED(hr) ? " (it succeeded but gave no manager)" : "");
        return FAILED(hr) ? hr : E_POINTER;
    }
    /* The plugin stays loaded: its objects may outlive any scope we could close it in. */
    return hm__guard_wrap(manager, out);
}

/* ---- Isolation ---------------------------------------------------------------------------------------------- */

/* What the child leaves for the parent beside the work's own results. */
typedef struct control {
    _Atomic(const char *) doing; /* a literal of this program: the same address in both processes */
    atomic_int finding;
    atomic_int in_flight;       /* calls into the host begun and not yet returned (hm__isolate_enter) */
    atomic_ullong steps;        /* calls begun or returned: a call_timeout_seconds without one is a hang */
    char message[600];
} control;

static control *child_control; /* set in a child only */

enum { FINDING_STATUS = 86 };

void hm__isolate_doing(const char *what)
{
    if (child_control)
        atomic_store_explicit(&child_control->doing, what, memory_order_relaxed);
}

const char *hm__isolate_enter(const char *what)
{
    if (!child_control)
        return NULL;
    const char *previous = atomic_exchange_explicit(&child_control->doing, what, memory_order_relaxed);
    atomic_fetch_add_explicit(&child_control->in_flight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&child_control->steps, 1, memory_order_release);
    return previous;
}

void hm__isolate_leave(const char *previous)
{
    if (!child_control)
        return;
    /* Threads' calls interleave: the last one out leaves no name behind, whatever its caller's was. */
    bool last = atomic_fetch_sub_explicit(&child_control->in_flight, 1, memory_order_relaxed) == 1;
    atomic_store_explicit(&child_control->doing, last ? NULL : previous, memory_order_relaxed);
    atomic_fetch_add_explicit(&child_control->steps, 1, memory_order_release);
}

_Noreturn void hm__isolate_finding(const char *fmt, ...)
{
    char message[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (!child_control) {
        fflush(stdout);
        fprintf(stderr, "hostmem: FINDING: %s\n", message);
        exit(1);
    }
    memcpy(child_control->message, message, sizeof message);
    atomic_store(&child_control->finding, 1);
    _exit(FINDING_STATUS);
}

void *hm__shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void hm__shared_free(void *p, size_t size)
{
    if (p)
        munmap(p, size);
}

/* Reads what is there on the child's stdout, keeping the first bytes; closes *fd at its end. */
static void drain_stdout(int *fd, hm_isolated *how)
{
    char buf[65536];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            close(*fd);
            *fd = -1;
        }
        return;
    }
    size_t kept = strlen(how->stdout_head), room = sizeof how->stdout_head - 1 - kept;
    for (ssize_t i = 0; i < n && room; i++, room--)
        how->stdout_head[kept++] = buf[i] >= 32 && buf[i] < 127 ? buf[i] : '.';
    how->stdout_head[kept] = '\0';
    how->stdout_bytes += (unsigned long long)n;
}

/* In the child: its own process group (so a timeout kills whatever the host started too), dead with its parent,
 * stdout into the capture pipe, then the work and the "done" byte. */
static _Noreturn void run_child(void (*work)(void *), void *ctx, control *ctl, pid_t parent, int done_fd, int out_fd)
{
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    child_control = ctl;
    if (out_fd >= 0 && dup2(out_fd, STDOUT_FILENO) < 0)
        _exit(127);
    work(ctx);
    hm__isolate_doing(NULL);
    fflush(NULL);
    char done = 'D';
    _exit(write(done_fd, &done, 1) == 1 ? 0 : 127);
}

static void describe(hm_isolated *how, bool killed, bool too_slow, const char *why, int status, const control *ctl)
{
    const char *doing = atomic_load(&ctl->doing);
    snprintf(how->doing, sizeof how->doing, "%s", doing ? doing : "");
    char in[128] = "";
    if (doing)
        snprintf(in, sizeof in, " in %s", doing);
    if (killed && too_slow) {
        how->end = HM_ISOLATED_TOO_SLOW;
        snprintf(how->message, sizeof how->message, "%s (the process was killed)", why);
    } else if (killed) {
        how->end = HM_ISOLATED_TIMED_OUT;
        snprintf(how->message, sizeof how->message, "%s%s%s (the process was killed)", why, doing ? ": it was" : "",
                 in);
    } else if (WIFSIGNALED(status)) {
        how->end = HM_ISOLATED_CRASHED;
        how->signal = WTERMSIG(status);
        snprintf(how->message, sizeof how->message, "the host crashed: %s (signal %d)%s", strsignal(how->signal),
                 how->signal, in);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == FINDING_STATUS && atomic_load(&ctl->finding)) {
        how->end = HM_ISOLATED_FINDING;
        snprintf(how->message, sizeof how->message, "%s", ctl->message);
    } else {
        how->end = HM_ISOLATED_EXITED;
        how->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        snprintf(how->message, sizeof how->message,
                 "the host exited the process with status %d%s before the call returned%s", how->status, in,
                 how->status ? " (a sanitizer's report above?)" : " (never a pass: a host must return)");
    }
}

hm_isolated_end hm__isolate(void (*work)(void *ctx), void *ctx, const hm_isolate_options *o, hm_isolated *how)
{
    memset(how, 0, sizeof *how);
    control *ctl = hm__shared_alloc(sizeof *ctl);
    int done[2] = {-1, -1}, out[2] = {-1, -1};
    if (!ctl || pipe2(done, O_CLOEXEC) != 0 || (!o->pass_stdout && pipe2(out, O_CLOEXEC) != 0)) {
        how->end = HM_ISOLATED_NO_CHILD;
        snprintf(how->message, sizeof how->message, "cannot start a child process: %s", strerror(errno));
        goto out;
    }
    fflush(NULL);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) {
        how->end = HM_ISOLATED_NO_CHILD;
        snprintf(how->message, sizeof how->message, "cannot start a child process: %s", strerror(errno));
        goto out;
    }
    if (pid == 0)
        run_child(work, ctx, ctl, parent, done[1], out[1]);
    setpgid(pid, pid); /* also here, so that a kill right away reaches the group */
    close(done[1]);
    done[1] = -1;
    if (out[1] >= 0) {
        close(out[1]);
        out[1] = -1;
    }
    double t0 = hm_now_seconds(), last_step_at = 0;
    unsigned long long last_steps = 0;
    bool got_done = false, killed = false, too_slow = false;
    char why[320] = "";
    int status = 0;
    for (;;) {
        struct pollfd fds[2];
        nfds_t n = 0;
        if (done[0] >= 0)
            fds[n++] = (struct pollfd){.fd = done[0], .events = POLLIN};
        if (out[0] >= 0)
            fds[n++] = (struct pollfd){.fd = out[0], .events = POLLIN};
        /* Once the child said done (or closed the pipe) it is about to exit: look again soon. */
        int wait_ms = got_done || done[0] < 0 ? 1 : 100;
        if (n ? poll(fds, n, wait_ms) < 0 && errno != EINTR : usleep((useconds_t)wait_ms * 1000) < 0 && errno != EINTR) {
            snprintf(why, sizeof why, "cannot watch the child: %s", strerror(errno));
            killed = true;
        }
        for (nfds_t i = 0; i < n; i++) {
            if (!fds[i].revents)
                continue;
            if (fds[i].fd == out[0]) {
                drain_stdout(&out[0], how);
            } else {
                char d = 0;
                ssize_t r = read(done[0], &d, 1);
                got_done |= r == 1 && d == 'D';
                if (r <= 0) {
                    close(done[0]);
                    done[0] = -1;
                }
            }
        }
        if (!killed) {
            pid_t waited = waitpid(pid, &status, WNOHANG);
            if (waited == pid)
                break;
            if (waited < 0 && errno != EINTR) { /* reaped elsewhere (SIGCHLD ignored): its status is lost */
                status = -1;
                break;
            }
            double elapsed = hm_now_seconds() - t0;
            unsigned long long steps = atomic_load_explicit(&ctl->steps, memory_order_acquire);
            if (steps != last_steps) {
                last_steps = steps;
                last_step_at = elapsed;
            }
            /* With a limit per call, only a call that stays in flight is a hang; the whole run's limit running out
             * while calls keep returning says the work is slow, not that the host is stuck. */
            if (!got_done && o->call_timeout_seconds > 0 && atomic_load(&ctl->in_flight) > 0 &&
                elapsed - last_step_at >= o->call_timeout_seconds) {
                snprintf(why, sizeof why, "the host did not return in %g s", o->call_timeout_seconds);
                killed = true;
            } else if (!got_done && o->timeout_seconds > 0 && elapsed >= o->timeout_seconds) {
                too_slow = o->call_timeout_seconds > 0;
                if (too_slow)
                    snprintf(why, sizeof why,
                             "the work did not end in %g s, though the host kept returning (no call was in flight "
                             "for %g s)", o->timeout_seconds, o->call_timeout_seconds);
                else
                    snprintf(why, sizeof why, "the host did not return in %g s", o->timeout_seconds);
                killed = true;
            } else if (!got_done && o->watch && o->watch(o->watch_ctx, elapsed, why, sizeof why)) {
                killed = true;
            }
        }
        if (killed) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
    }
    /* The child is gone: what it wrote last is in the pipes (a process the host started may still hold them, so
     * only what is there now is read). */
    struct pollfd last = {.fd = done[0], .events = POLLIN};
    if (!got_done && !killed && done[0] >= 0 && poll(&last, 1, 0) == 1) {
        char d = 0;
        got_done = read(done[0], &d, 1) == 1 && d == 'D';
    }
    for (int rounds = 0; out[0] >= 0 && rounds < 1024; rounds++) {
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        if (poll(&p, 1, 0) != 1)
            break;
        drain_stdout(&out[0], how);
    }
    if (got_done && !killed)
        how->end = HM_ISOLATED_REPORTED;
    else
        describe(how, killed, too_slow, why, status, ctl);
out:
    for (int i = 0; i < 2; i++) {
        if (done[i] >= 0)
            close(done[i]);
        if (out[i] >= 0)
            close(out[i]);
    }
    hm__shared_free(ctl, sizeof *ctl);
    return how->end;
}

void hm__isolated_note_stdout(const hm_isolated *how, FILE *f)
{
    if (how->stdout_bytes)
        fprintf(f, "hostmem: note: the host wrote %llu byte(s) on stdout, kept out of the report (they began \"%s\")\n",
                how->stdout_bytes, how->stdout_head);
}
