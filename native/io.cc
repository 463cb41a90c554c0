// Bindings for FIEMAP, confined opens, direct I/O and block device facts (each on the libuv pool), and the quick
// synchronous name calls of the ext4 pool's swap.
#include <fcntl.h>
#include <sys/mman.h>
#include <cerrno>
#include <cstdint>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bindings.h"
#include "errors.h"
#include "sys.h"
#include "worker.h"

namespace fused {

namespace {

bool IsInt(const Napi::Value& v) { return v.IsNumber(); }

int ArgInt(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }
int64_t ArgInt64(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int64Value(); }

std::string ArgBytes(const Napi::Value& v) {
  if (v.IsBuffer()) {
    auto buf = v.As<Napi::Buffer<char>>();
    return std::string(buf.Data(), buf.Length());
  }
  return v.As<Napi::String>().Utf8Value();
}

class FiemapWorker : public PromiseWorker {
 public:
  // The worker owns a duplicate of the descriptor: if the caller closes its fd (and the number is reused by
  // another open) while the batches run, FIEMAP still talks to the same file.
  FiemapWorker(Napi::Env env, int fd, bool sync, size_t max)
      : PromiseWorker(env, "fused:fiemap"), fd_(fcntl(fd, F_DUPFD_CLOEXEC, 0)), dup_errno_(fd_ < 0 ? errno : 0),
        sync_(sync), max_(max) {}
  ~FiemapWorker() override {
    if (fd_ >= 0) close(fd_);
  }
  void Execute() override {
    if (fd_ < 0) return Fail(-dup_errno_, "fcntl(F_DUPFD_CLOEXEC)");
    int rc = FiemapAll(fd_, sync_, max_, &extents_);
    if (rc < 0) Fail(rc, "ioctl(FS_IOC_FIEMAP)");
  }
  // One Float64Array, four numbers per extent (logical, physical, length, flags): building an object per extent
  // through N-API cost more than the ioctls for a file of many thousand extents. The TS wrapper makes the objects.
  Napi::Value Result() override {
    Napi::Env env = Env();
    Napi::Float64Array out = Napi::Float64Array::New(env, extents_.size() * 4);
    double* d = out.Data();
    for (size_t i = 0; i < extents_.size(); i++) {
      const Extent& e = extents_[i];
      d[4 * i] = static_cast<double>(e.logical);
      d[4 * i + 1] = static_cast<double>(e.physical);
      d[4 * i + 2] = static_cast<double>(e.length);
      d[4 * i + 3] = static_cast<double>(e.flags);
    }
    return out;
  }

 private:
  int fd_;  // declared first: dup_errno_ is initialised from it
  int dup_errno_;
  bool sync_;
  size_t max_;
  std::vector<Extent> extents_;
};

class OpenBeneathWorker : public PromiseWorker {
 public:
  OpenBeneathWorker(Napi::Env env, std::string root, std::string rel, bool write)
      : PromiseWorker(env, "fused:openBeneath"), root_(std::move(root)), rel_(std::move(rel)), write_(write) {}
  void Execute() override {
    const char* syscall = "openat2";
    fd_ = OpenBeneath(root_, rel_, write_, &syscall);
    // The root itself failing to open is reported with the root's path; everything else with rel's.
    if (fd_ < 0) FailAt(fd_, syscall, strcmp(syscall, "open") == 0 ? root_ : rel_);
  }
  Napi::Value Result() override { return Napi::Number::New(Env(), fd_); }

 private:
  std::string root_, rel_;
  bool write_;
  int fd_ = -1;
};

class OpenDirectWorker : public PromiseWorker {
 public:
  OpenDirectWorker(Napi::Env env, std::string path, bool write, bool exclusive)
      : PromiseWorker(env, "fused:openDirect"), path_(std::move(path)), write_(write), exclusive_(exclusive) {}
  void Execute() override {
    fd_ = OpenDirect(path_, write_, exclusive_);
    if (fd_ < 0) FailAt(fd_, "open", path_);
  }
  Napi::Value Result() override { return Napi::Number::New(Env(), fd_); }

 private:
  std::string path_;
  bool write_, exclusive_;
  int fd_ = -1;
};

class DeviceInfoWorker : public PromiseWorker {
 public:
  DeviceInfoWorker(Napi::Env env, int fd) : PromiseWorker(env, "fused:deviceInfo"), fd_(fd) {}
  void Execute() override {
    const char* syscall = "fstat";
    int rc = DeviceInfo(fd_, &facts_, &syscall);
    if (rc < 0) Fail(rc, syscall);
  }
  Napi::Value Result() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("isBlockDevice", Napi::Boolean::New(env, facts_.is_block_device));
    o.Set("size", Napi::Number::New(env, static_cast<double>(facts_.size)));
    o.Set("logicalSectorSize", Napi::Number::New(env, facts_.logical_sector_size));
    o.Set("physicalSectorSize", Napi::Number::New(env, facts_.physical_sector_size));
    o.Set("rdevMajor", Napi::Number::New(env, facts_.rdev_major));
    o.Set("rdevMinor", Napi::Number::New(env, facts_.rdev_minor));
    return o;
  }

 private:
  int fd_;
  DeviceFacts facts_{};
};

// pread/pwrite: holds a reference to the Buffer so the GC cannot free its memory while the pool uses it.
class TransferWorker : public PromiseWorker {
 public:
  TransferWorker(Napi::Env env, bool write, int fd, Napi::Buffer<char> buf, size_t offset, size_t length,
                 int64_t position, double not_after_ms)
      : PromiseWorker(env, write ? "fused:pwrite" : "fused:pread"),
        write_(write),
        fd_(fd),
        data_(buf.Data() + offset),
        length_(length),
        position_(position),
        not_after_ms_(not_after_ms),
        keep_(Napi::Persistent(buf)) {}
  void Execute() override {
    // The lease deadline is checked here, on the pool thread, right before the system call: a call that waited
    // in the pool's queue (or in a process stopped meanwhile) past it fails with ETIME and touches nothing.
    if (not_after_ms_ > 0 && MonotonicMs() >= not_after_ms_) {
      Fail(-ETIME, write_ ? "pwrite" : "pread");
      return;
    }
    done_ = write_ ? PwriteRetry(fd_, data_, length_, position_) : PreadRetry(fd_, data_, length_, position_);
    if (done_ < 0) Fail(static_cast<int>(done_), write_ ? "pwrite" : "pread");
  }
  Napi::Value Result() override { return Napi::Number::New(Env(), static_cast<double>(done_)); }

 private:
  bool write_;
  int fd_;
  char* data_;
  size_t length_;
  off_t position_;
  double not_after_ms_;
  Napi::Reference<Napi::Buffer<char>> keep_;
  ssize_t done_ = 0;
};

// The pipe a pool thread splices through: made at its first splice, kept for the thread's life, 1 MiB where the
// kernel lets it be (fs.pipe-max-size). Closed after any failure, so no bytes of one call are left for the next.
struct ThreadPipe {
  int r = -1;
  int w = -1;
  size_t size = 0;
  ~ThreadPipe() { Drop(); }
  int Ensure() {
    if (r >= 0) return 0;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return -errno;
    r = p[0];
    w = p[1];
    int got = fcntl(w, F_SETPIPE_SZ, 1 << 20);
    if (got < 0) got = fcntl(w, F_GETPIPE_SZ);
    size = got > 0 ? static_cast<size_t>(got) : 65536;
    return 0;
  }
  void Drop() {
    if (r >= 0) close(r);
    if (w >= 0) close(w);
    r = w = -1;
  }
};
thread_local ThreadPipe thread_pipe;

// splice: bytes of a file (through its page cache) to a device opened with O_DIRECT, through the pool thread's
// pipe: no copy through user space. Owns a duplicate of the source descriptor, as FiemapWorker does: a caller that
// closes its fd (whose number another open may then take) cannot make it read another file. The deadline is checked
// before every splice into the device. Resolves to the bytes written: fewer than asked only where the source ended.
class SpliceWorker : public PromiseWorker {
 public:
  SpliceWorker(Napi::Env env, int src_fd, int64_t src_offset, int dev_fd, int64_t dev_offset, int64_t length,
               double not_after_ms)
      : PromiseWorker(env, "fused:splice"), src_(fcntl(src_fd, F_DUPFD_CLOEXEC, 0)), dup_errno_(src_ < 0 ? errno : 0),
        src_offset_(src_offset), dev_(dev_fd), dev_offset_(dev_offset), length_(length), not_after_ms_(not_after_ms) {}
  ~SpliceWorker() override {
    if (src_ >= 0) close(src_);
  }
  void Execute() override {
    if (src_ < 0) return Fail(-dup_errno_, "fcntl(F_DUPFD_CLOEXEC)");
    int rc = thread_pipe.Ensure();
    if (rc < 0) return Fail(rc, "pipe2");
    loff_t in = src_offset_, out = dev_offset_;
    int64_t left = length_;
    while (left > 0) {
      ssize_t n = splice(src_, &in, thread_pipe.w, nullptr, static_cast<size_t>(std::min<int64_t>(left, thread_pipe.size)), SPLICE_F_MOVE);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Failed(-errno);
      if (n == 0) break;  // the source ends here
      for (ssize_t m = n; m > 0;) {
        if (not_after_ms_ > 0 && MonotonicMs() >= not_after_ms_) return Failed(-ETIME);
        ssize_t k = splice(thread_pipe.r, nullptr, dev_, &out, static_cast<size_t>(m), SPLICE_F_MOVE);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return Failed(-errno);
        if (k == 0) return Failed(-EIO);
        m -= k;
        done_ += k;
      }
      left -= n;
    }
  }
  Napi::Value Result() override { return Napi::Number::New(Env(), static_cast<double>(done_)); }

 private:
  void Failed(int err) {
    thread_pipe.Drop();
    Fail(err, "splice");
  }
  int src_;  // declared first: dup_errno_ is initialised from it
  int dup_errno_;
  loff_t src_offset_;
  int dev_;
  loff_t dev_offset_;
  int64_t length_;
  double not_after_ms_;
  int64_t done_ = 0;
};

// fsync, close, fadvise, fallocate: a call that yields nothing but success or an errno.
class SimpleWorker : public PromiseWorker {
 public:
  enum class Op { kFsync, kClose, kFadvise, kFallocate };
  SimpleWorker(Napi::Env env, Op op, int fd, int arg, int64_t offset, int64_t length)
      : PromiseWorker(env, "fused:io"), op_(op), fd_(fd), arg_(arg), offset_(offset), length_(length) {}
  void Execute() override {
    switch (op_) {
      case Op::kFsync: Check(Fsync(fd_), "fsync"); break;
      case Op::kClose: Check(Close(fd_), "close"); break;
      case Op::kFadvise: Check(Fadvise(fd_, offset_, length_, arg_), "posix_fadvise"); break;
      case Op::kFallocate: Check(Fallocate(fd_, arg_, offset_, length_), "fallocate"); break;
    }
  }

 private:
  void Check(int rc, const char* syscall) {
    if (rc < 0) Fail(rc, syscall);
  }
  Op op_;
  int fd_, arg_;
  int64_t offset_, length_;
};

// FICLONERANGE from src into dest; the addon's validation already ruled out length 0 (the kernel's "to EOF").
class CloneRangeWorker : public PromiseWorker {
 public:
  CloneRangeWorker(Napi::Env env, int src_fd, int64_t src_offset, int64_t length, int dest_fd, int64_t dest_offset)
      : PromiseWorker(env, "fused:cloneRange"), src_fd_(src_fd), dest_fd_(dest_fd), src_offset_(src_offset),
        length_(length), dest_offset_(dest_offset) {}
  void Execute() override {
    int rc = CloneRange(src_fd_, static_cast<uint64_t>(src_offset_), static_cast<uint64_t>(length_), dest_fd_,
                        static_cast<uint64_t>(dest_offset_));
    if (rc < 0) Fail(rc, "ioctl(FICLONERANGE)");
  }

 private:
  int src_fd_, dest_fd_;
  int64_t src_offset_, length_, dest_offset_;
};

class ReadHeadWorker : public PromiseWorker {
 public:
  ReadHeadWorker(Napi::Env env, std::string path, size_t length)
      : PromiseWorker(env, "fused:readHead"), path_(std::move(path)), length_(length) {}
  ~ReadHeadWorker() override { free(aligned_); }
  void Execute() override {
    if (posix_memalign(&aligned_, 4096, length_) != 0) {
      aligned_ = nullptr;
      FailAt(-ENOMEM, "posix_memalign", path_);
      return;
    }
    const char* syscall = "open";
    done_ = ReadHead(path_, aligned_, length_, &syscall);
    if (done_ < 0) FailAt(static_cast<int>(done_), syscall, path_);
  }
  Napi::Value Result() override {
    return Napi::Buffer<char>::Copy(Env(), static_cast<char*>(aligned_), static_cast<size_t>(done_));
  }

 private:
  std::string path_;
  size_t length_;
  void* aligned_ = nullptr;
  ssize_t done_ = 0;
};

Napi::Value JsFiemap(const Napi::CallbackInfo& info) {
  if (ThrowIfNot(info.Env(), IsInt(info[0]) && info[1].IsBoolean() && info[2].IsNumber(), "fiemap(fd, sync, maxExtents)"))
    return Napi::Value();
  double max = info[2].As<Napi::Number>().DoubleValue();
  return (new FiemapWorker(info.Env(), ArgInt(info, 0), info[1].As<Napi::Boolean>(),
                           max >= 9e15 ? SIZE_MAX : static_cast<size_t>(max)))
      ->Start();
}

Napi::Value JsInodeFlags(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, IsInt(info[0]), "inodeFlags(fd)")) return Napi::Value();
  long rc = InodeFlags(ArgInt(info, 0));
  if (ThrowFault(env, rc < 0 ? static_cast<int>(rc) : 0, "ioctl(FS_IOC_GETFLAGS)")) return Napi::Value();
  return Napi::Number::New(env, static_cast<double>(rc));
}

Napi::Value JsSetDirect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, IsInt(info[0]) && info[1].IsBoolean(), "setDirect(fd, on)")) return Napi::Value();
  int rc = SetDirect(ArgInt(info, 0), info[1].As<Napi::Boolean>());
  if (ThrowFault(env, rc, "fcntl(F_SETFL)")) return Napi::Value();
  return Napi::Boolean::New(env, rc == 1);
}

Napi::Value JsOpenBeneath(const Napi::CallbackInfo& info) {
  bool ok = info[0].IsString() && (info[1].IsBuffer() || info[1].IsString()) && info[2].IsBoolean();
  if (ThrowIfNot(info.Env(), ok, "openBeneath(root, rel, write)")) return Napi::Value();
  return (new OpenBeneathWorker(info.Env(), ArgBytes(info[0]), ArgBytes(info[1]), info[2].As<Napi::Boolean>()))
      ->Start();
}

// For the synchronous lookups beneath a root: throw the error of a negative rc, with the root's path when the root
// itself failed to open, else rel's (as OpenBeneathWorker reports them); false (nothing thrown) when rc >= 0.
bool ThrowBeneathFault(Napi::Env env, int rc, const char* syscall, const std::string& root, const std::string& rel) {
  if (rc >= 0) return false;
  Fault fault;
  fault.err = -rc;
  fault.syscall = syscall;
  fault.path = strcmp(syscall, "open") == 0 ? root : rel;
  fault.has_path = true;
  MakeError(env, fault).ThrowAsJavaScriptException();
  return true;
}

// The root of a lookup beneath it: a path (opened for each call), or a directory already open (a non-negative
// integer: its O_PATH descriptor, so the root is not looked up again).
bool IsRoot(const Napi::Value& v) { return v.IsString() || (IsInt(v) && v.As<Napi::Number>().Int64Value() >= 0); }

// The same open on the calling thread: for the map server's read maps, where the trip through the pool cost more
// than the opens themselves (a local file system whose dentries the server's own lookup has just warmed).
Napi::Value JsOpenBeneathSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool ok = IsRoot(info[0]) && (info[1].IsBuffer() || info[1].IsString()) && info[2].IsBoolean();
  if (ThrowIfNot(env, ok, "openBeneathSync(root, rel, write)")) return Napi::Value();
  bool at = !info[0].IsString();
  std::string root = at ? std::string() : ArgBytes(info[0]), rel = ArgBytes(info[1]);
  bool write = info[2].As<Napi::Boolean>();
  const char* syscall = "openat2";
  int fd = at ? OpenBeneathAt(info[0].As<Napi::Number>().Int32Value(), rel, write, &syscall)
              : OpenBeneath(root, rel, write, &syscall);
  if (ThrowBeneathFault(env, fd, syscall, root, rel)) return Napi::Value();
  return Napi::Number::New(env, fd);
}

// StatBeneath on the calling thread: [dev, ino] as BigInts (an inode number may not fit a double).
Napi::Value JsStatBeneath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool ok = IsRoot(info[0]) && (info[1].IsBuffer() || info[1].IsString());
  if (ThrowIfNot(env, ok, "statBeneath(root, rel)")) return Napi::Value();
  bool at = !info[0].IsString();
  std::string root = at ? std::string() : ArgBytes(info[0]), rel = ArgBytes(info[1]);
  const char* syscall = "openat2";
  uint64_t dev = 0, ino = 0;
  int rc = at ? StatBeneathAt(info[0].As<Napi::Number>().Int32Value(), rel, &dev, &ino, &syscall)
              : StatBeneath(root, rel, &dev, &ino, &syscall);
  if (ThrowBeneathFault(env, rc, syscall, root, rel)) return Napi::Value();
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(uint32_t{0}, Napi::BigInt::New(env, dev));
  out.Set(uint32_t{1}, Napi::BigInt::New(env, ino));
  return out;
}

Napi::Value JsOpenDirect(const Napi::CallbackInfo& info) {
  bool ok = info[0].IsString() && info[1].IsBoolean() && info[2].IsBoolean();
  if (ThrowIfNot(info.Env(), ok, "openDirect(path, write, exclusive)")) return Napi::Value();
  return (new OpenDirectWorker(info.Env(), ArgBytes(info[0]), info[1].As<Napi::Boolean>(),
                               info[2].As<Napi::Boolean>()))
      ->Start();
}

Napi::Value JsDeviceInfo(const Napi::CallbackInfo& info) {
  if (ThrowIfNot(info.Env(), IsInt(info[0]), "deviceInfo(fd)")) return Napi::Value();
  return (new DeviceInfoWorker(info.Env(), ArgInt(info, 0)))->Start();
}

// An optional last argument, the deadline in CLOCK_MONOTONIC ms: absent or undefined, or a number.
bool IsOptionalDeadline(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() <= i || info[i].IsUndefined() || info[i].IsNumber();
}
// That deadline, 0 when there is none.
double ArgDeadline(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : 0;
}

Napi::Value Transfer(const Napi::CallbackInfo& info, bool write) {
  Napi::Env env = info.Env();
  bool ok = IsInt(info[0]) && info[1].IsBuffer() && IsInt(info[2]) && IsInt(info[3]) && IsInt(info[4]) &&
            IsOptionalDeadline(info, 5);
  if (ThrowIfNot(env, ok, "pread/pwrite(fd, buf, bufOffset, length, position[, notAfterMs])")) return Napi::Value();
  double not_after_ms = ArgDeadline(info, 5);
  auto buf = info[1].As<Napi::Buffer<char>>();
  int64_t offset = ArgInt64(info, 2), length = ArgInt64(info, 3), position = ArgInt64(info, 4);
  ok = offset >= 0 && length >= 0 && position >= 0 && static_cast<uint64_t>(offset + length) <= buf.Length();
  if (ThrowIfNot(env, ok, "pread/pwrite range outside the buffer")) return Napi::Value();
  return (new TransferWorker(env, write, ArgInt(info, 0), buf, static_cast<size_t>(offset),
                             static_cast<size_t>(length), position, not_after_ms))
      ->Start();
}

Napi::Value JsPread(const Napi::CallbackInfo& info) { return Transfer(info, false); }
Napi::Value JsPwrite(const Napi::CallbackInfo& info) { return Transfer(info, true); }

Napi::Value JsSpliceWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool ok = IsInt(info[0]) && IsInt(info[1]) && IsInt(info[2]) && IsInt(info[3]) && IsInt(info[4]) &&
            IsOptionalDeadline(info, 5);
  if (ThrowIfNot(env, ok, "spliceWrite(srcFd, srcOffset, devFd, devOffset, length[, notAfterMs])")) return Napi::Value();
  int64_t src_offset = ArgInt64(info, 1), dev_offset = ArgInt64(info, 3), length = ArgInt64(info, 4);
  ok = src_offset >= 0 && dev_offset >= 0 && length >= 0;
  if (ThrowIfNot(env, ok, "spliceWrite offsets and length must not be negative")) return Napi::Value();
  double not_after_ms = ArgDeadline(info, 5);
  return (new SpliceWorker(env, ArgInt(info, 0), src_offset, ArgInt(info, 2), dev_offset, length, not_after_ms))->Start();
}

Napi::Value JsFsync(const Napi::CallbackInfo& info) {
  if (ThrowIfNot(info.Env(), IsInt(info[0]), "fsync(fd)")) return Napi::Value();
  return (new SimpleWorker(info.Env(), SimpleWorker::Op::kFsync, ArgInt(info, 0), 0, 0, 0))->Start();
}

Napi::Value JsClose(const Napi::CallbackInfo& info) {
  if (ThrowIfNot(info.Env(), IsInt(info[0]), "close(fd)")) return Napi::Value();
  return (new SimpleWorker(info.Env(), SimpleWorker::Op::kClose, ArgInt(info, 0), 0, 0, 0))->Start();
}

Napi::Value JsFadvise(const Napi::CallbackInfo& info) {
  bool ok = IsInt(info[0]) && IsInt(info[1]) && IsInt(info[2]) && IsInt(info[3]);
  if (ThrowIfNot(info.Env(), ok, "fadvise(fd, offset, length, advice)")) return Napi::Value();
  return (new SimpleWorker(info.Env(), SimpleWorker::Op::kFadvise, ArgInt(info, 0), ArgInt(info, 3),
                           ArgInt64(info, 1), ArgInt64(info, 2)))
      ->Start();
}

Napi::Value JsFallocate(const Napi::CallbackInfo& info) {
  bool ok = IsInt(info[0]) && IsInt(info[1]) && IsInt(info[2]) && IsInt(info[3]);
  if (ThrowIfNot(info.Env(), ok, "fallocate(fd, mode, offset, length)")) return Napi::Value();
  return (new SimpleWorker(info.Env(), SimpleWorker::Op::kFallocate, ArgInt(info, 0), ArgInt(info, 1),
                           ArgInt64(info, 2), ArgInt64(info, 3)))
      ->Start();
}

Napi::Value JsCloneRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool ok = IsInt(info[0]) && IsInt(info[1]) && IsInt(info[2]) && IsInt(info[3]) && IsInt(info[4]);
  if (ThrowIfNot(env, ok, "cloneRange(srcFd, srcOffset, length, destFd, destOffset)")) return Napi::Value();
  int64_t src_offset = ArgInt64(info, 1), length = ArgInt64(info, 2), dest_offset = ArgInt64(info, 4);
  ok = src_offset >= 0 && length > 0 && dest_offset >= 0;
  if (ThrowIfNot(env, ok, "cloneRange: offsets non-negative, length positive")) return Napi::Value();
  return (new CloneRangeWorker(env, ArgInt(info, 0), src_offset, length, ArgInt(info, 3), dest_offset))->Start();
}

Napi::Value JsReadHead(const Napi::CallbackInfo& info) {
  bool ok = info[0].IsString() && IsInt(info[1]);
  if (ThrowIfNot(info.Env(), ok, "readHead(path, length)")) return Napi::Value();
  int64_t length = ArgInt64(info, 1);
  if (ThrowIfNot(info.Env(), length > 0 && length % 4096 == 0, "readHead length: a positive multiple of 4096"))
    return Napi::Value();
  return (new ReadHeadWorker(info.Env(), ArgBytes(info[0]), static_cast<size_t>(length)))->Start();
}

// Aligned memory for O_DIRECT, zeroed; the finalizer frees it and tells V8 the external memory is gone. Large
// buffers (I/O chunks of megabytes) are anonymous mappings: page-aligned, zero by the kernel's promise, their pages
// faulted in by the first read into them (on a pool thread), not by a memset on the event loop. Measured: 16
// buffers of 4 MiB took 51 ms of fusedcat's main thread with posix_memalign + memset.
namespace {
constexpr int64_t kMapAtLeast = 64 * 1024;

struct AlignedMemory {
  int64_t bytes;
  bool mapped;
};
}  // namespace

Napi::Value JsAlignedBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, IsInt(info[0]) && IsInt(info[1]), "alignedBuffer(size, align)")) return Napi::Value();
  int64_t size = ArgInt64(info, 0), align = ArgInt64(info, 1);
  bool ok = align >= static_cast<int64_t>(sizeof(void*)) && (align & (align - 1)) == 0 && size > 0 &&
            size % align == 0;
  if (ThrowIfNot(env, ok, "alignedBuffer: align a power of two, size a positive multiple of it"))
    return Napi::Value();
  void* mem = nullptr;
  bool mapped = size >= kMapAtLeast && align <= sysconf(_SC_PAGESIZE);
  if (mapped) {
    // Not advised for huge pages: with THP's synchronous compaction (defrag=madvise) touching 16 such chunks took
    // 413 ms instead of 37 ms on this VM.
    mem = mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
      Fault fault;
      fault.err = errno;
      fault.syscall = "mmap";
      MakeError(env, fault).ThrowAsJavaScriptException();
      return Napi::Value();
    }
  } else {
    int rc = posix_memalign(&mem, static_cast<size_t>(align), static_cast<size_t>(size));
    if (rc != 0) {
      Fault fault;
      fault.err = rc;
      fault.syscall = "posix_memalign";
      MakeError(env, fault).ThrowAsJavaScriptException();
      return Napi::Value();
    }
    memset(mem, 0, static_cast<size_t>(size));
  }
  Napi::MemoryManagement::AdjustExternalMemory(env, size);
  auto* hint = new AlignedMemory{size, mapped};
  return Napi::Buffer<char>::New(
      env, static_cast<char*>(mem), static_cast<size_t>(size),
      [](Napi::Env env, char* data, AlignedMemory* m) {
        if (m->mapped) {
          munmap(data, static_cast<size_t>(m->bytes));
        } else {
          free(data);
        }
        Napi::MemoryManagement::AdjustExternalMemory(env, -m->bytes);
        delete m;
      },
      hint);
}

// Names in directories, for swapping a pre-zeroed file into place: synchronous, as each is one quick call on a
// local file system and the swap must not let other work in between its steps.
bool IsBytes(const Napi::Value& v) { return v.IsBuffer() || v.IsString(); }

Napi::Value JsOpenDirBeneath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, info[0].IsString() && IsBytes(info[1]), "openDirBeneath(root, rel)")) return Napi::Value();
  const char* syscall = "openat2";
  int fd = OpenDirBeneath(ArgBytes(info[0]), ArgBytes(info[1]), &syscall);
  if (ThrowFault(env, fd, syscall)) return Napi::Value();
  return Napi::Number::New(env, fd);
}

Napi::Value JsExchangeAt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool ok = info[0].IsNumber() && IsBytes(info[1]) && info[2].IsNumber() && IsBytes(info[3]);
  if (ThrowIfNot(env, ok, "exchangeAt(dirA, nameA, dirB, nameB)")) return Napi::Value();
  ThrowFault(env, ExchangeAt(ArgInt(info, 0), ArgBytes(info[1]), ArgInt(info, 2), ArgBytes(info[3])), "renameat2");
  return Napi::Value();
}

Napi::Value JsStatAt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, info[0].IsNumber() && IsBytes(info[1]), "statAt(dir, name)")) return Napi::Value();
  uint64_t dev = 0;
  uint64_t ino = 0;
  if (ThrowFault(env, StatAt(ArgInt(info, 0), ArgBytes(info[1]), &dev, &ino), "fstatat")) return Napi::Value();
  Napi::Object out = Napi::Object::New(env);
  out.Set("dev", Napi::BigInt::New(env, dev));
  out.Set("ino", Napi::BigInt::New(env, ino));
  return out;
}

Napi::Value JsCopyAccessAcl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, info[0].IsNumber() && info[1].IsNumber(), "copyAccessAcl(fromFd, toFd)")) return Napi::Value();
  const char* syscall = "fgetxattr";
  int rc = CopyAccessAcl(ArgInt(info, 0), ArgInt(info, 1), &syscall);
  if (ThrowFault(env, rc, syscall)) return Napi::Value();
  return Napi::Boolean::New(env, rc == 1);
}

}  // namespace

void InitIo(Napi::Env env, Napi::Object exports) {
  exports.Set("fiemap", Napi::Function::New(env, JsFiemap, "fiemap"));
  exports.Set("inodeFlags", Napi::Function::New(env, JsInodeFlags, "inodeFlags"));
  exports.Set("setDirect", Napi::Function::New(env, JsSetDirect, "setDirect"));
  exports.Set("openBeneath", Napi::Function::New(env, JsOpenBeneath, "openBeneath"));
  exports.Set("openBeneathSync", Napi::Function::New(env, JsOpenBeneathSync, "openBeneathSync"));
  exports.Set("statBeneath", Napi::Function::New(env, JsStatBeneath, "statBeneath"));
  exports.Set("openDirect", Napi::Function::New(env, JsOpenDirect, "openDirect"));
  exports.Set("deviceInfo", Napi::Function::New(env, JsDeviceInfo, "deviceInfo"));
  exports.Set("spliceWrite", Napi::Function::New(env, JsSpliceWrite, "spliceWrite"));
  exports.Set("alignedBuffer", Napi::Function::New(env, JsAlignedBuffer, "alignedBuffer"));
  exports.Set("pread", Napi::Function::New(env, JsPread, "pread"));
  exports.Set("pwrite", Napi::Function::New(env, JsPwrite, "pwrite"));
  exports.Set("fsync", Napi::Function::New(env, JsFsync, "fsync"));
  exports.Set("close", Napi::Function::New(env, JsClose, "close"));
  exports.Set("fadvise", Napi::Function::New(env, JsFadvise, "fadvise"));
  exports.Set("fallocate", Napi::Function::New(env, JsFallocate, "fallocate"));
  exports.Set("cloneRange", Napi::Function::New(env, JsCloneRange, "cloneRange"));
  exports.Set("readHead", Napi::Function::New(env, JsReadHead, "readHead"));
  exports.Set("openDirBeneath", Napi::Function::New(env, JsOpenDirBeneath, "openDirBeneath"));
  exports.Set("exchangeAt", Napi::Function::New(env, JsExchangeAt, "exchangeAt"));
  exports.Set("statAt", Napi::Function::New(env, JsStatAt, "statAt"));
  exports.Set("copyAccessAcl", Napi::Function::New(env, JsCopyAccessAcl, "copyAccessAcl"));

  Napi::Object c = Napi::Object::New(env);
  c.Set("POSIX_FADV_NORMAL", POSIX_FADV_NORMAL);
  c.Set("POSIX_FADV_SEQUENTIAL", POSIX_FADV_SEQUENTIAL);
  c.Set("POSIX_FADV_RANDOM", POSIX_FADV_RANDOM);
  c.Set("POSIX_FADV_WILLNEED", POSIX_FADV_WILLNEED);
  c.Set("POSIX_FADV_DONTNEED", POSIX_FADV_DONTNEED);
  c.Set("POSIX_FADV_NOREUSE", POSIX_FADV_NOREUSE);
  c.Set("FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  c.Set("FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  c.Set("FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  c.Set("FALLOC_FL_WRITE_ZEROES", kFallocWriteZeroes);
  c.Set("F_RDLCK", F_RDLCK);
  c.Set("F_WRLCK", F_WRLCK);
  c.Set("F_UNLCK", F_UNLCK);
  c.Set("FIEMAP_EXTENT_LAST", FIEMAP_EXTENT_LAST);
  c.Set("FIEMAP_EXTENT_UNKNOWN", FIEMAP_EXTENT_UNKNOWN);
  c.Set("FIEMAP_EXTENT_DELALLOC", FIEMAP_EXTENT_DELALLOC);
  c.Set("FIEMAP_EXTENT_ENCODED", FIEMAP_EXTENT_ENCODED);
  c.Set("FIEMAP_EXTENT_DATA_ENCRYPTED", FIEMAP_EXTENT_DATA_ENCRYPTED);
  c.Set("FIEMAP_EXTENT_NOT_ALIGNED", FIEMAP_EXTENT_NOT_ALIGNED);
  c.Set("FIEMAP_EXTENT_DATA_INLINE", FIEMAP_EXTENT_DATA_INLINE);
  c.Set("FIEMAP_EXTENT_DATA_TAIL", FIEMAP_EXTENT_DATA_TAIL);
  c.Set("FIEMAP_EXTENT_UNWRITTEN", FIEMAP_EXTENT_UNWRITTEN);
  c.Set("FIEMAP_EXTENT_MERGED", FIEMAP_EXTENT_MERGED);
  c.Set("FIEMAP_EXTENT_SHARED", FIEMAP_EXTENT_SHARED);
  exports.Set("constants", c);
}

}  // namespace fused
