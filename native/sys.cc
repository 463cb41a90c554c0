// Linux-specific system calls: FIEMAP, openat2 confinement, direct I/O, block device facts, leases.
#include "sys.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace fused {

namespace {

constexpr uint64_t kMaxSafeInteger = (uint64_t{1} << 53) - 1;
constexpr unsigned kFiemapBatch = 512;

int OpenAt2(int dirfd, const char* path, uint64_t flags, uint64_t resolve) {
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = flags;
  how.resolve = resolve;
  long fd;
  do {
    fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  } while (fd < 0 && errno == EINTR);  // EAGAIN is not retried: it also means "a lease holder is breaking"
  return fd < 0 ? -errno : static_cast<int>(fd);
}

// NO_XDEV: a file on another file system mounted inside the volume has offsets on another disk.
constexpr uint64_t kBeneath = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

// The root directory (O_PATH) to resolve `rel` beneath, once neither path holds a NUL; -errno and *syscall if not.
int OpenRoot(const std::string& root, const std::string& rel, const char** syscall) {
  if (root.find('\0') != std::string::npos || rel.find('\0') != std::string::npos) {
    *syscall = "openat2";
    return -EINVAL;
  }
  int fd = open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    *syscall = "open";
    return -errno;
  }
  return fd;
}

}  // namespace

int FiemapAll(int fd, bool sync, size_t max_extents, std::vector<Extent>* out) {
  size_t bytes = sizeof(struct fiemap) + kFiemapBatch * sizeof(struct fiemap_extent);
  auto* fm = static_cast<struct fiemap*>(calloc(1, bytes));
  if (fm == nullptr) return -ENOMEM;
  uint64_t start = 0;
  int rc = 0;
  for (;;) {
    memset(fm, 0, bytes);
    fm->fm_start = start;
    fm->fm_length = ~0ULL;  // the kernel clips to the file system's maximum
    fm->fm_flags = sync ? FIEMAP_FLAG_SYNC : 0;
    fm->fm_extent_count = kFiemapBatch;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) {
      rc = -errno;
      break;
    }
    if (fm->fm_mapped_extents == 0) break;
    bool last = false;
    for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
      const struct fiemap_extent& fe = fm->fm_extents[i];
      if (fe.fe_logical > kMaxSafeInteger || fe.fe_physical > kMaxSafeInteger ||
          fe.fe_length > kMaxSafeInteger || fe.fe_logical + fe.fe_length > kMaxSafeInteger) {
        rc = -kErrTooBig;
        break;
      }
      out->push_back({fe.fe_logical, fe.fe_physical, fe.fe_length, fe.fe_flags});
      if (out->size() > max_extents) {
        rc = -kErrTooMany;
        break;
      }
      if (fe.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    if (rc != 0 || last) break;
    const struct fiemap_extent& tail = fm->fm_extents[fm->fm_mapped_extents - 1];
    uint64_t next = tail.fe_logical + tail.fe_length;
    if (next <= start) break;  // no progress: never loop forever on a confused file system
    start = next;
  }
  free(fm);
  return rc;
}

namespace {

// The O_PATH half of OpenBeneath: fstat of rel beneath the directory rootfd (regular files only) without opening it
// (a FIFO cannot block, a device has no open side effect, a lease does not break).
int ProbeBeneath(int rootfd, const std::string& rel, struct stat* want, const char** syscall) {
  if (rel.find('\0') != std::string::npos) {
    *syscall = "openat2";
    return -EINVAL;
  }
  int probe = OpenAt2(rootfd, rel.c_str(), O_PATH | O_CLOEXEC, kBeneath);
  if (probe < 0) {
    *syscall = "openat2";
    return probe;
  }
  if (fstat(probe, want) < 0) {
    int err = -errno;
    close(probe);
    *syscall = "fstat";
    return err;
  }
  close(probe);
  if (!S_ISREG(want->st_mode)) {
    *syscall = "openat2";
    return -kErrNotRegular;
  }
  return 0;
}

}  // namespace

int StatBeneathAt(int rootfd, const std::string& rel, uint64_t* dev, uint64_t* ino, const char** syscall) {
  struct stat want;
  int rc = ProbeBeneath(rootfd, rel, &want, syscall);
  if (rc < 0) return rc;
  *dev = want.st_dev;
  *ino = want.st_ino;
  return 0;
}

int OpenBeneathAt(int rootfd, const std::string& rel, bool write, const char** syscall) {
  struct stat want;
  int rc = ProbeBeneath(rootfd, rel, &want, syscall);
  if (rc < 0) return rc;
  // O_NONBLOCK: if the name was swapped for a FIFO meanwhile, the open must not hang (dev/ino catches it).
  int fd = OpenAt2(rootfd, rel.c_str(), (write ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, kBeneath);
  if (fd < 0) {
    *syscall = "openat2";
    return fd;
  }
  struct stat got;
  if (fstat(fd, &got) < 0) {
    int err = -errno;
    close(fd);
    *syscall = "fstat";
    return err;
  }
  if (got.st_dev != want.st_dev || got.st_ino != want.st_ino) {
    close(fd);
    *syscall = "openat2";
    return -ESTALE;
  }
  return fd;
}

int StatBeneath(const std::string& root, const std::string& rel, uint64_t* dev, uint64_t* ino, const char** syscall) {
  int rootfd = OpenRoot(root, rel, syscall);
  if (rootfd < 0) return rootfd;
  int rc = StatBeneathAt(rootfd, rel, dev, ino, syscall);
  close(rootfd);
  return rc;
}

int OpenBeneath(const std::string& root, const std::string& rel, bool write, const char** syscall) {
  int rootfd = OpenRoot(root, rel, syscall);
  if (rootfd < 0) return rootfd;
  int fd = OpenBeneathAt(rootfd, rel, write, syscall);
  close(rootfd);
  return fd;
}

int OpenDirect(const std::string& path, bool write, bool exclusive) {
  if (path.find('\0') != std::string::npos) return -EINVAL;
  int flags = O_DIRECT | O_CLOEXEC | (write ? O_RDWR : O_RDONLY) | (exclusive ? O_EXCL : 0);
  int fd = open(path.c_str(), flags);
  return fd < 0 ? -errno : fd;
}

int DeviceInfo(int fd, DeviceFacts* out, const char** syscall) {
  struct stat st;
  *syscall = "fstat";
  if (fstat(fd, &st) < 0) return -errno;
  if (S_ISREG(st.st_mode)) {
    // An image file stands in for a disk: report the usual sector sizes of one.
    *out = {false, static_cast<uint64_t>(st.st_size), 512, 4096, 0, 0};
    return 0;
  }
  if (!S_ISBLK(st.st_mode)) return -ENOTBLK;
  out->is_block_device = true;
  out->rdev_major = major(st.st_rdev);
  out->rdev_minor = minor(st.st_rdev);
  uint64_t size = 0;
  int lss = 0;
  unsigned int pss = 0;
  *syscall = "ioctl(BLKGETSIZE64)";
  if (ioctl(fd, BLKGETSIZE64, &size) < 0) return -errno;
  *syscall = "ioctl(BLKSSZGET)";
  if (ioctl(fd, BLKSSZGET, &lss) < 0) return -errno;
  *syscall = "ioctl(BLKPBSZGET)";
  if (ioctl(fd, BLKPBSZGET, &pss) < 0) return -errno;
  out->size = size;
  out->logical_sector_size = static_cast<uint32_t>(lss);
  out->physical_sector_size = pss;
  return 0;
}

double MonotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

ssize_t PreadRetry(int fd, void* buf, size_t length, off_t position) {
  ssize_t n;
  do {
    n = pread(fd, buf, length, position);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

ssize_t PwriteRetry(int fd, const void* buf, size_t length, off_t position) {
  ssize_t n;
  do {
    n = pwrite(fd, buf, length, position);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

int Fsync(int fd) {
  int rc;
  do {
    rc = fsync(fd);
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : 0;
}

int Close(int fd) {
  // Linux frees the descriptor even when close reports EINTR; retrying could close someone else's fd.
  if (close(fd) < 0 && errno != EINTR) return -errno;
  return 0;
}

int Fadvise(int fd, off_t offset, off_t length, int advice) {
  return -posix_fadvise(fd, offset, length, advice);  // returns the error number, not -1
}

int Fallocate(int fd, int mode, off_t offset, off_t length) {
  int rc;
  do {
    rc = fallocate(fd, mode, offset, length);
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : 0;
}

int CloneRange(int src_fd, uint64_t src_offset, uint64_t length, int dest_fd, uint64_t dest_offset) {
  struct file_clone_range range;
  range.src_fd = src_fd;
  range.src_offset = src_offset;
  range.src_length = length;
  range.dest_offset = dest_offset;
  int rc;
  do {
    rc = ioctl(dest_fd, FICLONERANGE, &range);
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : 0;
}

ssize_t ReadHead(const std::string& path, void* aligned, size_t length, const char** syscall) {
  *syscall = "open";
  if (path.find('\0') != std::string::npos) return -EINVAL;
  int fd = open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0 && errno == EINVAL) fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);  // a fs without O_DIRECT
  if (fd < 0) return -errno;
  size_t done = 0;
  ssize_t rc = 0;
  *syscall = "pread";
  while (done < length) {
    ssize_t n = PreadRetry(fd, static_cast<char*>(aligned) + done, length - done, static_cast<off_t>(done));
    if (n < 0) {
      rc = n;
      break;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  close(fd);
  return rc < 0 ? rc : static_cast<ssize_t>(done);
}

int SetLease(int fd, int signal, int type, const char** syscall) {
  *syscall = "fcntl(F_SETSIG)";
  if (fcntl(fd, F_SETSIG, signal) < 0) return -errno;
  *syscall = "fcntl(F_SETLEASE)";
  if (fcntl(fd, F_SETLEASE, type) < 0) {
    // Releasing a lease that is already gone (broken and timed out) is not a failure.
    if (type == F_UNLCK && errno == EAGAIN) return 0;
    return -errno;
  }
  return 0;
}

int GetLease(int fd) {
  int type = fcntl(fd, F_GETLEASE);
  return type < 0 ? -errno : type;
}

long InodeFlags(int fd) {
  long flags = 0;
  if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0) return -errno;
  return flags;
}

int SetDirect(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -errno;
  int want = on ? flags | O_DIRECT : flags & ~O_DIRECT;
  if (want != flags && fcntl(fd, F_SETFL, want) < 0) return -errno;
  return (flags & O_DIRECT) != 0 ? 1 : 0;
}

int OpenDirBeneath(const std::string& root, const std::string& rel, const char** syscall) {
  int rootfd = OpenRoot(root, rel, syscall);
  if (rootfd < 0) return rootfd;
  int fd = OpenAt2(rootfd, rel.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC, kBeneath);
  close(rootfd);
  *syscall = "openat2";
  return fd;
}

int ExchangeAt(int dir_a, const std::string& name_a, int dir_b, const std::string& name_b) {
  if (name_a.find('\0') != std::string::npos || name_b.find('\0') != std::string::npos) return -EINVAL;
  if (renameat2(dir_a, name_a.c_str(), dir_b, name_b.c_str(), RENAME_EXCHANGE) < 0) return -errno;
  return 0;
}

int StatAt(int dirfd, const std::string& name, uint64_t* dev, uint64_t* ino) {
  if (name.find('\0') != std::string::npos) return -EINVAL;
  struct stat st;
  if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return -errno;
  *dev = st.st_dev;
  *ino = st.st_ino;
  return 0;
}

int CopyAccessAcl(int from_fd, int to_fd, const char** syscall) {
  static const char kName[] = "system.posix_acl_access";
  char value[65536];
  *syscall = "fgetxattr";
  ssize_t n = fgetxattr(from_fd, kName, value, sizeof value);
  if (n < 0) return errno == ENODATA || errno == EOPNOTSUPP ? 0 : -errno;
  *syscall = "fsetxattr";
  if (fsetxattr(to_fd, kName, value, static_cast<size_t>(n), 0) < 0) return -errno;
  return 1;
}

}  // namespace fused
