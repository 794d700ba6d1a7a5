// The adaptive codec controller on made-up step measurements: steps up while the link is busier
// than the compute, tries the codec below when it has room, never moves on one noisy step, and
// waits longer after each failed try.
#include <geopipe/core/error.h>
#include <geopipe/runtime/adaptive_codec.h>
#include <geopipe/runtime/trainer.h>

#include <gtest/gtest.h>

using geopipe::runtime::AdaptiveCodec;

TEST(AdaptiveCodec, StepsUpOnlyAfterAWindowOfStepsWhereTheLinkHoldsThePipelineBack) {
  AdaptiveCodec a(true, "none");  // window 2, up 1.2, down 0.6
  std::string why;
  EXPECT_FALSE(a.observe(3.0, 1.0, &why));   // one step over: not yet
  EXPECT_TRUE(a.observe(2.5, 1.0, &why));    // two: up
  EXPECT_EQ(a.codec(), "int8-block");
  EXPECT_NE(why.find("busy 2.50x the compute over 2 steps (> 1.20)"), std::string::npos) << why;
  EXPECT_FALSE(a.observe(1.5, 1.0, &why));   // a fresh window at the new codec
  EXPECT_FALSE(a.observe(1.1, 1.0, &why));   // about as busy as the compute (< 1.2): stays
  EXPECT_FALSE(a.observe(1.3, 1.0, &why));   // the window still holds the 1.1
  EXPECT_TRUE(a.observe(1.3, 1.0, &why));
  EXPECT_EQ(a.codec(), "int4-block");
  EXPECT_FALSE(a.observe(5.0, 1.0, &why));   // the top of the ladder: stays
  EXPECT_FALSE(a.observe(5.0, 1.0, &why));
  EXPECT_EQ(a.codec(), "int4-block");
}

TEST(AdaptiveCodec, OneNoisyStepDoesNotMoveIt) {
  AdaptiveCodec a(true, "none");
  std::string why;
  for (double busy : {0.2, 3.0, 0.2, 3.0, 0.9, 0.9}) EXPECT_FALSE(a.observe(busy, 1.0, &why)) << busy;
  EXPECT_EQ(a.codec(), "none");
}

TEST(AdaptiveCodec, TriesTheCodecBelowWhenTheLinkHasRoomOnAverage) {
  AdaptiveCodec a(false, "int8-block");  // gradients: none <- int8-block
  std::string why;
  EXPECT_FALSE(a.observe(0.7, 1.0, &why));   // busy 0.7 of the compute: not room enough (< 0.6)
  EXPECT_FALSE(a.observe(0.7, 1.0, &why));
  EXPECT_FALSE(a.observe(0.55, 1.0, &why));  // the last two steps average 0.625
  EXPECT_TRUE(a.observe(0.45, 1.0, &why));   // 0.5: try none
  EXPECT_EQ(a.codec(), "none");
  EXPECT_NE(why.find("busy 0.50x the compute on average over 2 steps (< 0.60): trying none"), std::string::npos)
      << why;
}

TEST(AdaptiveCodec, AFailedTryDoublesTheStepsTheNextOneWaits) {
  AdaptiveCodec a(true, "int8-block");
  std::string why;
  EXPECT_FALSE(a.observe(0.3, 1.0, &why));
  EXPECT_TRUE(a.observe(0.3, 1.0, &why));  // try none
  EXPECT_EQ(a.codec(), "none");
  EXPECT_FALSE(a.observe(1.5, 1.0, &why));
  EXPECT_TRUE(a.observe(1.5, 1.0, &why));  // none holds the pipeline back: back to int8
  EXPECT_EQ(a.codec(), "int8-block");
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(a.observe(0.3, 1.0, &why)) << i;  // now 4 steps of room
  EXPECT_TRUE(a.observe(0.3, 1.0, &why));
  EXPECT_NE(why.find("over 4 steps"), std::string::npos) << why;
}

TEST(AdaptiveCodec, GradientsNeverGoBelowInt8AndAStartOffTheLadderIsRefused) {
  AdaptiveCodec g(false, "none");
  std::string why;
  for (int i = 0; i < 6; ++i) g.observe(9.0, 1.0, &why);
  EXPECT_EQ(g.codec(), "int8-block");
  try {
    AdaptiveCodec bad(true, "fp8-e4m3-block");
    FAIL() << "accepted";
  } catch (const geopipe::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("the plan's link starts at \"fp8-e4m3-block\""), std::string::npos) << e.what();
  }
}

TEST(AdaptiveCodec, TheCodecFlagMapsAdaptiveToThePlansStartingCodecs) {
  using Pair = std::pair<std::string, std::string>;
  EXPECT_EQ(geopipe::runtime::codec_pair("adaptive"), (Pair{"", ""}));  // the plan's codecs, then adapted
  EXPECT_EQ(geopipe::runtime::codec_pair("plan"), (Pair{"", ""}));
  EXPECT_EQ(geopipe::runtime::codec_pair("int4"), (Pair{"int4-block", "int8-block"}));
  try {
    geopipe::runtime::codec_pair("zip");
    FAIL() << "accepted";
  } catch (const geopipe::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("expected none, int8, fp8, int4, plan, adaptive"), std::string::npos) << e.what();
  }
}
