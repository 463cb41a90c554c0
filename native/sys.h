// Linux system calls the addon needs, as plain functions returning >= 0 or -errno (no Node types here).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fused {

// FALLOC_FL_WRITE_ZEROES (Linux 6.17) is newer than this machine's headers; the value is ABI.
constexpr int kFallocWriteZeroes = 0x80;

// Not an errno: openBeneath found something other than a regular file.
constexpr int kErrNotRegular = 1 << 20;
// Not an errno: a FIEMAP number does not fit a JS number exactly.
constexpr int kErrTooBig = (1 << 20) + 1;
constexpr int kErrTooMany = (1 << 20) + 2;

struct Extent {
  uint64_t logical;
  uint64_t physical;
  uint64_t length;
  uint32_t flags;
};

struct DeviceFacts {
  bool is_block_device;
  uint64_t size;
  uint32_t logical_sector_size;
  uint32_t physical_sector_size;
  uint32_t rdev_major;
  uint32_t rdev_minor;
};

// Every extent of fd's data, in kernel order, batch after batch. *syscall names the failing call.
// Stops with -kErrTooMany once more than max_extents extents were collected (a hostile file must not cost
// unbounded memory).
int FiemapAll(int fd, bool sync, size_t max_extents, std::vector<Extent>* out);
// FS_IOC_GETFLAGS: the inode's attribute flags (FS_ENCRYPT_FL, FS_JOURNAL_DATA_FL, ...), or -errno.
long InodeFlags(int fd);
// Turns O_DIRECT on or off on fd's open file description (F_SETFL); returns 1 if it was on before, 0 if not.
int SetDirect(int fd, bool on);

// openat2 beneath root, regular files only; returns the fd. *syscall names the failing call.
int OpenBeneath(const std::string& root, const std::string& rel, bool write, const char** syscall);
// The same lookup with O_PATH only (opens nothing, breaks no lease): the file's st_dev and st_ino.
int StatBeneath(const std::string& root, const std::string& rel, uint64_t* dev, uint64_t* ino, const char** syscall);
// Both beneath a root directory already open (an O_PATH descriptor): the same checks, without opening the root.
int OpenBeneathAt(int rootfd, const std::string& rel, bool write, const char** syscall);
int StatBeneathAt(int rootfd, const std::string& rel, uint64_t* dev, uint64_t* ino, const char** syscall);

int OpenDirect(const std::string& path, bool write, bool exclusive);
int DeviceInfo(int fd, DeviceFacts* out, const char** syscall);
ssize_t PreadRetry(int fd, void* buf, size_t length, off_t position);
ssize_t PwriteRetry(int fd, const void* buf, size_t length, off_t position);
int Fsync(int fd);
int Close(int fd);
int Fadvise(int fd, off_t offset, off_t length, int advice);
int Fallocate(int fd, int mode, off_t offset, off_t length);
// FICLONERANGE: share src's blocks [src_offset, +length) into dest at dest_offset (reflink file systems).
int CloneRange(int src_fd, uint64_t src_offset, uint64_t length, int dest_fd, uint64_t dest_offset);
// Reads up to length bytes from offset 0 into the aligned buffer, stopping at end of device; returns bytes.
ssize_t ReadHead(const std::string& path, void* aligned, size_t length, const char** syscall);

// CLOCK_MONOTONIC in milliseconds: the clock of libuv's uv_hrtime, so of Node's process.hrtime.
double MonotonicMs();

int SetLease(int fd, int signal, int type, const char** syscall);

// The directory `rel` beneath `root` (openat2 RESOLVE_BENEATH, no magic links, no other mounts), opened O_PATH:
// a handle for the *at calls below, never for reading. "." is the root itself. *syscall names the failing call.
int OpenDirBeneath(const std::string& root, const std::string& rel, const char** syscall);
// renameat2(RENAME_EXCHANGE): the two names swap their inodes atomically (both must exist).
int ExchangeAt(int dir_a, const std::string& name_a, int dir_b, const std::string& name_b);
// fstatat(AT_SYMLINK_NOFOLLOW) of one name in a directory: its st_dev and st_ino.
int StatAt(int dirfd, const std::string& name, uint64_t* dev, uint64_t* ino);
// The POSIX access ACL (system.posix_acl_access) of from_fd onto to_fd; returns 1 if copied, 0 if from_fd has
// none (or the file system keeps no ACLs). *syscall names the failing call.
int CopyAccessAcl(int from_fd, int to_fd, const char** syscall);
int GetLease(int fd);

}  // namespace fused
