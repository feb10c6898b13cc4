// How many threads a kernel call uses: the OpenMP team helpers, the per-call work thresholds below
// which a call stays on the calling thread, and the cores other processes leave free.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#ifdef __linux__
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace pfg {

// This thread's number in its OpenMP team, and the team's size (0 and 1 without OpenMP).
inline int team_thread() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
inline int team_size() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// Below these many multiply-adds one call (a loss, a predict, one loss_grad; not the fused multi-step
// loops, whose team stays busy from step to step) runs on the calling thread: OpenBLAS on one thread
// (`blas`, dense work of the whole call) and the sparse first layer without an OpenMP team (`sparse`).
// The tutorials' loops call gradient, loss and numpy work in turn; a team woken per call, next to
// OpenBLAS's pool, leaves threads spinning for the cores the others need, and on a busy machine every
// barrier waits for a descheduled thread (784-100x4-10, batch 128, one core busy: gradient 55 ms
// with two threads, 1.2 ms on one). Settable for benchmarks (_core.set_call_work).
// `split`: a loss_grad of at least this much work (its three passes) splits the batch's rows into
// parts, one thread each (Mlp::loss_grad_split): one fork/join per call, OpenBLAS on one thread
// inside, where OpenBLAS's own team per gemm (9 gemms of 128 x 100 x 100 per call in the tutorials'
// chapter-6 nets) cost a wake-up each and spun against the numpy work between calls. `rows`: a
// predict/loss of at least this much work runs its rows on a team (Mlp::forward_in) when a team ran less
// than a millisecond ago (team_awake), from `sparse` always.
struct CallWork {
    double blas = double(1 << 26);
    double sparse = double(1 << 24);
    double split = double(1 << 23);
    double rows = double(1 << 22);
};
inline CallWork& call_work() {
    static CallWork w;
    return w;
}

// Cores that other processes leave free, from /proc/stat's busy time of all CPUs minus this process's
// own CPU time (getrusage: our threads that spin between calls count as ours) over the last window of
// at least kWindowMs, scaled to the CPUs this process may use. A team larger than that waits at every
// barrier for a thread the scheduler has parked (one core of two busy: an epoch 7-9x its idle time).
// Linux only; elsewhere, or with PYFASTGRAD_ADAPTIVE_THREADS=0, every core counts as free.
class FreeCores {
public:
    static constexpr long kWindowMs = 100;

    static FreeCores& get() {
        static FreeCores f;
        return f;
    }
    bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
    void set_enabled(bool on) { enabled_.store(on, std::memory_order_relaxed); }

    // Free cores among `want` (>= 1): cached between probes, never blocks another caller.
    int of(int want) {
        if (!enabled() || want <= 1) return std::max(want, 1);
#ifdef __linux__
        const auto now = std::chrono::steady_clock::now();
        const std::int64_t now_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
        if (now_ms - last_ms_.load(std::memory_order_relaxed) >= kWindowMs) {
            std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
            if (lock.owns_lock() && now_ms - last_ms_.load(std::memory_order_relaxed) >= kWindowMs) probe(now_ms);
        }
        const double busy = other_busy_.load(std::memory_order_relaxed);  // fraction of the machine
        const int free = static_cast<int>(double(want) * (1.0 - busy) + 0.5);
        return std::clamp(free, 1, want);
#else
        return want;
#endif
    }

private:
    FreeCores() {
        const char* env = std::getenv("PYFASTGRAD_ADAPTIVE_THREADS");
        set_enabled(!(env && std::strcmp(env, "0") == 0));
    }

#ifdef __linux__
    // One window: busy jiffies of the whole machine, our CPU seconds, the wall clock.
    void probe(std::int64_t now_ms) {
        double busy_s = 0.0, total_s = 0.0;
        if (!read_stat(&busy_s, &total_s)) {
            set_enabled(false);  // no /proc/stat (a sandbox): stop asking
            return;
        }
        rusage ru{};
        getrusage(RUSAGE_SELF, &ru);
        const double self_s = double(ru.ru_utime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec) +
                              double(ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_stime.tv_usec);
        const std::int64_t prev = last_ms_.load(std::memory_order_relaxed);
        if (prev > 0 && total_s > total0_) {
            // the others' share of all CPU time in the window (jiffies are 10 ms: a window of 100 ms
            // on 2 cores has 20 of them)
            const double others = std::max(0.0, (busy_s - busy0_) - (self_s - self0_));
            other_busy_.store(std::clamp(others / (total_s - total0_), 0.0, 1.0), std::memory_order_relaxed);
        }
        busy0_ = busy_s;
        total0_ = total_s;
        self0_ = self_s;
        last_ms_.store(now_ms, std::memory_order_relaxed);
    }

    static bool read_stat(double* busy_s, double* total_s) {
        std::FILE* f = std::fopen("/proc/stat", "r");
        if (!f) return false;
        unsigned long long v[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // user nice system idle iowait irq softirq steal
        const int got = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                                    &v[4], &v[5], &v[6], &v[7]);
        std::fclose(f);
        if (got < 4) return false;
        const double hz = double(sysconf(_SC_CLK_TCK));
        const double idle = double(v[3] + v[4]);
        const double busy = double(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
        *busy_s = busy / hz;
        *total_s = (busy + idle) / hz;
        return true;
    }

    std::mutex mu_;
    std::atomic<std::int64_t> last_ms_{0};
    std::atomic<double> other_busy_{0.0};
    double busy0_ = 0.0, total0_ = 0.0, self0_ = 0.0;
#endif
    std::atomic<bool> enabled_{true};  // read by every call, written from any thread
};

// When a team last finished. Its threads spin a while before they sleep (GOMP: ~ms), so a mid-size call
// soon after (the tutorials' chapter-6 loop: gradient, update, loss, each on a team) finds them awake and
// cheap, while the same call after a stretch of one-thread work (the chapter-5 loop's accuracy(1000))
// pays their wake-up and cold caches: 0.57 ms repeated, 0.94 ms in the loop (Mlp::rows_threads).
inline std::int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}
inline std::atomic<std::int64_t>& last_team_ns() {
    static std::atomic<std::int64_t> t{0};
    return t;
}
inline void team_done() { last_team_ns().store(steady_ns(), std::memory_order_relaxed); }
inline bool team_awake() { return steady_ns() - last_team_ns().load(std::memory_order_relaxed) < 1000000; }

// Threads for an OpenMP team now: the configured count, less the cores other processes keep busy.
inline int team_threads() {
#ifdef _OPENMP
    return FreeCores::get().of(std::max(1, omp_get_max_threads()));
#else
    return 1;
#endif
}

}  // namespace pfg
