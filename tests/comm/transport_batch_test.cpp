// TransportBatch, the guard around Transport::begin_batch/end_batch (transport.h), on a
// transport that only counts: every begin gets its end, in nesting order, also when an
// exception leaves the scope.
#include <geopipe/comm/transport.h>

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

using namespace geopipe::comm;

namespace {

class CountingTransport final : public Transport {
 public:
  Backend backend() const override { return Backend::kNccl; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Request isend(const void*, size_t, int, int, const MessageHeader&) override { return {}; }
  Request irecv(void*, size_t, int, int, const Expect&) override { return {}; }
  void begin_batch() override { log += "("; }
  void end_batch() override {
    log += ")";
    if (fail_end) throw std::runtime_error("end_batch failed");
  }
  std::string log;
  bool fail_end = false;
};

}  // namespace

TEST(TransportBatch, EndsEveryBatchItBeganInNestingOrder) {
  CountingTransport t;
  {
    TransportBatch outer(t);
    {
      TransportBatch inner(t);
      EXPECT_EQ(t.log, "((");
    }
    EXPECT_EQ(t.log, "(()");
  }
  EXPECT_EQ(t.log, "(())");
}

TEST(TransportBatch, EndsTheBatchWhenAnExceptionLeavesItsScope) {
  CountingTransport t;
  EXPECT_THROW(
      {
        TransportBatch batch(t);
        throw std::runtime_error("posting failed");
      },
      std::runtime_error);
  EXPECT_EQ(t.log, "()");
}

TEST(TransportBatch, AFailingEndIsReportedUnlessAnotherErrorIsInFlight) {
  CountingTransport t;
  t.fail_end = true;
  try {
    { TransportBatch batch(t); }
    FAIL() << "expected end_batch's error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "end_batch failed");
  }
  try {
    TransportBatch batch(t);
    throw std::logic_error("posting failed");
  } catch (const std::logic_error& e) {
    EXPECT_STREQ(e.what(), "posting failed");  // the first error wins; no terminate
  }
  EXPECT_EQ(t.log, "()()");
}
