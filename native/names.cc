// Names in directories, for swapping a pre-zeroed file into place: a directory handle beneath the volume root,
// renameat2(RENAME_EXCHANGE), fstatat, and the access ACL copied from one file to another. All synchronous: each
// is one quick call on a local file system, and the swap must not let other work in between its steps.
#include <napi.h>

#include <cstdint>
#include <string>

#include "bindings.h"
#include "errors.h"
#include "sys.h"

namespace fused {

namespace {

std::string Bytes(const Napi::Value& v) {
  if (v.IsBuffer()) {
    auto buf = v.As<Napi::Buffer<char>>();
    return std::string(buf.Data(), buf.Length());
  }
  return v.As<Napi::String>().Utf8Value();
}

bool IsName(const Napi::Value& v) { return v.IsBuffer() || v.IsString(); }

int Int(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }

Napi::Value JsOpenDirBeneath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, info[0].IsString() && IsName(info[1]), "openDirBeneath(root, rel)")) return Napi::Value();
  const char* syscall = "openat2";
  int fd = OpenDirBeneath(Bytes(info[0]), Bytes(info[1]), &syscall);
  if (ThrowFault(env, fd, syscall)) return Napi::Value();
  return Napi::Number::New(env, fd);
}

Napi::Value JsExchangeAt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool ok = info[0].IsNumber() && IsName(info[1]) && info[2].IsNumber() && IsName(info[3]);
  if (ThrowIfNot(env, ok, "exchangeAt(dirA, nameA, dirB, nameB)")) return Napi::Value();
  ThrowFault(env, ExchangeAt(Int(info, 0), Bytes(info[1]), Int(info, 2), Bytes(info[3])), "renameat2");
  return Napi::Value();
}

Napi::Value JsStatAt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, info[0].IsNumber() && IsName(info[1]), "statAt(dir, name)")) return Napi::Value();
  uint64_t dev = 0;
  uint64_t ino = 0;
  if (ThrowFault(env, StatAt(Int(info, 0), Bytes(info[1]), &dev, &ino), "fstatat")) return Napi::Value();
  Napi::Object out = Napi::Object::New(env);
  out.Set("dev", Napi::BigInt::New(env, dev));
  out.Set("ino", Napi::BigInt::New(env, ino));
  return out;
}

Napi::Value JsCopyAccessAcl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ThrowIfNot(env, info[0].IsNumber() && info[1].IsNumber(), "copyAccessAcl(fromFd, toFd)")) return Napi::Value();
  const char* syscall = "fgetxattr";
  int rc = CopyAccessAcl(Int(info, 0), Int(info, 1), &syscall);
  if (ThrowFault(env, rc, syscall)) return Napi::Value();
  return Napi::Boolean::New(env, rc == 1);
}

}  // namespace

void InitNames(Napi::Env env, Napi::Object exports) {
  exports.Set("openDirBeneath", Napi::Function::New(env, JsOpenDirBeneath, "openDirBeneath"));
  exports.Set("exchangeAt", Napi::Function::New(env, JsExchangeAt, "exchangeAt"));
  exports.Set("statAt", Napi::Function::New(env, JsStatAt, "statAt"));
  exports.Set("copyAccessAcl", Napi::Function::New(env, JsCopyAccessAcl, "copyAccessAcl"));
}

}  // namespace fused
