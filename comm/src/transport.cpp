// What every backend shares (transport.h).
#include <geopipe/comm/transport.h>

#include <exception>

namespace geopipe::comm {

void wait_all(std::vector<Request>& requests, Seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto& r : requests) {
    const Seconds left = deadline - std::chrono::steady_clock::now();
    r.wait(left.count() > 0 ? left : Seconds(0));
  }
}

TransportBatch::TransportBatch(Transport& transport)
    : transport_(transport), exceptions_at_begin_(std::uncaught_exceptions()) {
  transport_.begin_batch();
}

// The batch must end even while an exception unwinds the stack (NCCL would otherwise stay in
// its group). An error of end_batch() then is dropped: the exception in flight is the one that
// says what went wrong, and a second one would terminate the process.
TransportBatch::~TransportBatch() noexcept(false) {
  if (std::uncaught_exceptions() == exceptions_at_begin_) {
    transport_.end_batch();
    return;
  }
  try {
    transport_.end_batch();
  } catch (...) {
  }
}

}  // namespace geopipe::comm
