// MetricsHttpExporter: serves a MetricsRegistry as GET /metrics (Prometheus text format) on
// its own thread, using cpp-httplib. Thread-safe; stops in the destructor.
#ifndef REGTOPK_COMMON_METRICS_HTTP_EXPORTER_H_
#define REGTOPK_COMMON_METRICS_HTTP_EXPORTER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/metrics/registry.h"

namespace regtopk {

class MetricsHttpExporter {
 public:
  // Listens on host:port (port 0 picks a free one). `registry` is borrowed and must outlive
  // the exporter. UNAVAILABLE if the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsHttpExporter>> Start(
      const std::string& host, int port, const MetricsRegistry* registry);
  ~MetricsHttpExporter();

  int port() const { return port_; }

 private:
  struct Impl;
  explicit MetricsHttpExporter(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  int port_;
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_METRICS_HTTP_EXPORTER_H_
