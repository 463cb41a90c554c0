// A promise-returning AsyncWorker: the system call runs in Execute on the libuv pool, JS values in OnOK.
#pragma once

#include <napi.h>

#include <string>

#include "errors.h"

namespace fused {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

  // Queues the worker (which deletes itself when done) and hands back its promise.
  Napi::Promise Start() {
    Napi::Promise promise = deferred_.Promise();
    Queue();
    return promise;
  }

 protected:
  // Called from Execute: records the failure; OnError turns it into the rejection.
  void Fail(int negative_errno, const char* syscall) {
    fault_.err = -negative_errno;
    fault_.syscall = syscall;
    SetError(fault_.syscall);
  }
  void FailAt(int negative_errno, const char* syscall, const std::string& path) {
    fault_.path = path;
    fault_.has_path = true;
    Fail(negative_errno, syscall);
  }

  virtual Napi::Value Result() { return Env().Undefined(); }

  void OnOK() override { deferred_.Resolve(Result()); }
  void OnError(const Napi::Error&) override { deferred_.Reject(MakeError(Env(), fault_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Fault fault_;
};

}  // namespace fused
