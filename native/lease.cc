// Kernel leases and their break notifications: signal handler -> self-pipe -> watcher thread -> JS callback.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "bindings.h"
#include "errors.h"
#include "sys.h"

namespace fused {

namespace {

// A real-time signal queues one instance per break, each carrying its si_fd.
int LeaseSignal() { return SIGRTMIN + 5; }

struct LeaseState;
void DeliverBreak(Napi::Env env, Napi::Function, LeaseState* state, int* fd);
using BreakFn = Napi::TypedThreadSafeFunction<LeaseState, int, DeliverBreak>;

// One per process: signal dispositions are process-wide, so is the watcher. Leases belong to the main thread.
struct LeaseState {
  int pipe_read = -1;
  int pipe_write = -1;
  std::mutex mu;       // guards live and fn against the env's teardown
  bool live = false;   // fn may be called
  BreakFn fn;
  Napi::FunctionReference callback;  // main thread only
};

// Never destroyed: the watcher thread and the signal handler may outlive the JS environment at exit.
LeaseState& g_state = *new LeaseState;
bool g_installed = false;  // main thread only

void OnLeaseSignal(int signo, siginfo_t* si, void*) {
  int saved = errno;
  // SIGIO means the real-time queue overflowed and si_fd is lost: -1 asks the holder to check every lease.
  int fd = signo == SIGIO ? -1 : si->si_fd;
  ssize_t n = write(g_state.pipe_write, &fd, sizeof fd);  // non-blocking; async-signal-safe
  (void)n;
  errno = saved;
}

void* WatchBreaks(void*) {
  for (;;) {
    int fd;
    ssize_t n = read(g_state.pipe_read, &fd, sizeof fd);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof fd)) return nullptr;
    std::lock_guard<std::mutex> lock(g_state.mu);
    if (!g_state.live) continue;  // no JS left to tell
    int* data = new int(fd);
    if (g_state.fn.NonBlockingCall(data) != napi_ok) delete data;
  }
}

void DeliverBreak(Napi::Env env, Napi::Function, LeaseState* state, int* fd) {
  int value = *fd;
  delete fd;
  if (env == nullptr || state->callback.IsEmpty()) return;
  state->callback.Call({Napi::Number::New(env, value)});
}

// Installs handler, pipe and watcher once; returns -errno and the failing call.
int Install(Napi::Env env, const char** syscall) {
  if (g_installed) return 0;
  int fds[2];
  *syscall = "pipe2";
  if (pipe2(fds, O_CLOEXEC) < 0) return -errno;
  // Only the signal handler's end is non-blocking: a full pipe drops a notice instead of hanging a thread.
  *syscall = "fcntl(F_SETFL)";
  if (fcntl(fds[1], F_SETFL, O_NONBLOCK) < 0) {
    int err = -errno;
    close(fds[0]);
    close(fds[1]);
    return err;
  }
  g_state.pipe_read = fds[0];
  g_state.pipe_write = fds[1];

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnLeaseSignal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  *syscall = "sigaction";
  if (sigaction(LeaseSignal(), &sa, nullptr) < 0) return -errno;
  // SIGIO (queue overflow) would kill the process by default; take it only if nobody else handles it.
  struct sigaction old;
  if (sigaction(SIGIO, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) sigaction(SIGIO, &sa, nullptr);

  g_state.fn = BreakFn::New(
      env, "fused:leaseBreak", 0, 1, &g_state, [](Napi::Env, void*, LeaseState* state) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->live = false;
      });
  g_state.fn.Unref(env);  // a watcher must never keep the process alive
  {
    std::lock_guard<std::mutex> lock(g_state.mu);
    g_state.live = true;
  }
  // Registered after the thread-safe function, so it runs before that is torn down.
  env.AddCleanupHook([] {
    std::lock_guard<std::mutex> lock(g_state.mu);
    g_state.live = false;
    g_state.callback.Reset();
  });

  pthread_t thread;
  *syscall = "pthread_create";
  int rc = pthread_create(&thread, nullptr, WatchBreaks, nullptr);
  if (rc != 0) return -rc;
  pthread_detach(thread);
  g_installed = true;
  return 0;
}

Napi::Value JsSetLease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, info[0].IsNumber() && info[1].IsNumber(), "setLease(fd, type)")) return Napi::Value();
  const char* syscall = "sigaction";
  // The handler must exist before the first F_SETLEASE: the signal's default action kills the process.
  if (ThrowFault(env, Install(env, &syscall), syscall)) return Napi::Value();
  int rc = SetLease(info[0].As<Napi::Number>().Int32Value(), LeaseSignal(),
                    info[1].As<Napi::Number>().Int32Value(), &syscall);
  ThrowFault(env, rc, syscall);
  return Napi::Value();
}

Napi::Value JsGetLease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, info[0].IsNumber(), "getLease(fd)")) return Napi::Value();
  int rc = GetLease(info[0].As<Napi::Number>().Int32Value());
  if (ThrowFault(env, rc, "fcntl(F_GETLEASE)")) return Napi::Value();
  return Napi::Number::New(env, rc);
}

Napi::Value JsOnLeaseBreak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, info[0].IsFunction(), "onLeaseBreak(callback)")) return Napi::Value();
  const char* syscall = "sigaction";
  if (ThrowFault(env, Install(env, &syscall), syscall)) return Napi::Value();
  g_state.callback = Napi::Persistent(info[0].As<Napi::Function>());
  return Napi::Value();
}

}  // namespace

void InitLease(Napi::Env env, Napi::Object exports) {
  exports.Set("setLease", Napi::Function::New(env, JsSetLease, "setLease"));
  exports.Set("getLease", Napi::Function::New(env, JsGetLease, "getLease"));
  exports.Set("onLeaseBreak", Napi::Function::New(env, JsOnLeaseBreak, "onLeaseBreak"));
}

}  // namespace fused
