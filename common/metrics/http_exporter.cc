#include "common/metrics/http_exporter.h"

#include <httplib.h>

#include <thread>

#include "absl/strings/str_cat.h"

namespace regtopk {

struct MetricsHttpExporter::Impl {
  httplib::Server server;
  std::thread thread;
};

absl::StatusOr<std::unique_ptr<MetricsHttpExporter>> MetricsHttpExporter::Start(
    const std::string& host, int port, const MetricsRegistry* registry) {
  auto impl = std::make_unique<Impl>();
  // Bounded: a fixed pool of threads, one request per connection, and short timeouts, so that
  // clients that connect and stall (or read slowly) free their thread within a second and
  // cannot keep /metrics from answering. (A client that trickles a byte a second can still
  // hold one thread; there are kThreads.)
  constexpr size_t kThreads = 4;
  impl->server.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  impl->server.set_read_timeout(1, 0);
  impl->server.set_write_timeout(2, 0);
  impl->server.set_keep_alive_max_count(1);
  impl->server.set_keep_alive_timeout(1);
  impl->server.Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  int bound = port == 0 ? impl->server.bind_to_any_port(host)
                        : (impl->server.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", host, ":", port, " (port in use?)"));
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->server.listen_after_bind(); });
  return std::unique_ptr<MetricsHttpExporter>(new MetricsHttpExporter(std::move(impl), bound));
}

MetricsHttpExporter::MetricsHttpExporter(std::unique_ptr<Impl> impl, int port)
    : impl_(std::move(impl)), port_(port) {}

MetricsHttpExporter::~MetricsHttpExporter() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace regtopk
