// ForwardingClient: a ServerClient that forwards every call to another one. Fault-injecting
// clients derive from it and override only what they break. For tests only.
#ifndef REGTOPK_TESTS_TESTING_FORWARDING_CLIENT_H_
#define REGTOPK_TESTS_TESTING_FORWARDING_CLIENT_H_

#include <memory>
#include <utility>

#include "client/server_client.h"

namespace regtopk {

class ForwardingClient : public ServerClient {
 public:
  explicit ForwardingClient(std::unique_ptr<ServerClient> inner) : inner_(std::move(inner)) {}
  absl::StatusOr<JoinReply> Join(uint32_t w, uint64_t n, uint64_t d, uint64_t l,
                                 const JoinIdentity& id = {}) override {
    return inner_->Join(w, n, d, l, id);
  }
  absl::Status UploadParameters(uint32_t w, absl::Span<const float> v) override {
    return inner_->UploadParameters(w, v);
  }
  absl::StatusOr<PulledParameters> PullParameters(uint32_t w, bool momentum = false) override {
    return inner_->PullParameters(w, momentum);
  }
  absl::StatusOr<PushReply> Push(uint32_t w, uint64_t round, absl::string_view e,
                                 uint64_t saved = 0) override {
    return inner_->Push(w, round, e, saved);
  }
  absl::StatusOr<ServerStatusInfo> GetStatus() override { return inner_->GetStatus(); }

 private:
  std::unique_ptr<ServerClient> inner_;
};

}  // namespace regtopk

#endif  // REGTOPK_TESTS_TESTING_FORWARDING_CLIENT_H_
