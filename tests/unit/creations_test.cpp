// SPDX-License-Identifier: Apache-2.0
// The coordinator's agreement on the creations a restart replays (launcher/ghostrun/creations.h),
// from the "made" lists ranks send: "<parent id>:<parent size>:<pos>[~][@place],...".
#include "launcher/ghostrun/creations.h"

#include <gtest/gtest.h>

namespace ghost::run {
namespace {

using made_lists = std::map<int, std::vector<std::string>>;
using prune_map = std::map<std::string, std::vector<std::string>>;

TEST(Creations, EveryMemberHoldingThemAgrees) {
    made_lists made{{0, {"a1:2:1@1,2@2"}}, {1, {"a1:2:1@1,2@2"}}};
    prune_map prune;
    EXPECT_EQ(agree_on_creations(made, true, prune), "");
    EXPECT_TRUE(prune.empty());
}

TEST(Creations, DeadOnEveryHolderIsPruned) {
    // Position 1 dead on both members, position 2 dead on one only (the other still uses it).
    made_lists made{{0, {"a1:2:1~@1,2~@2"}}, {1, {"a1:2:1~@1,2@2"}}};
    prune_map prune;
    EXPECT_EQ(agree_on_creations(made, true, prune), "");
    ASSERT_EQ(prune.count("a1"), 1u);
    EXPECT_EQ(prune["a1"], std::vector<std::string>{"1"});
    EXPECT_EQ(prune_words(made[0], prune), " prune 1 a1:1");
    EXPECT_EQ(prune_words({"b2:2:1"}, prune), "");
}

TEST(Creations, BetweenEpochsOnlyWhatEveryMemberListsDeadGoes) {
    // Rank 1 has not returned from the creation at position 2 yet: it does not list it.
    made_lists made{{0, {"a1:2:1~,2~"}}, {1, {"a1:2:1~"}}};
    prune_map prune;
    EXPECT_EQ(agree_on_creations(made, false, prune), "");
    EXPECT_EQ(prune["a1"], std::vector<std::string>{"1"});
}

TEST(Creations, ALiveCreationNotHeldByEveryMemberIsRefused) {
    // Three members; rank 2 does not hold position 2 (a restart would wait in its replay).
    made_lists made{{0, {"a1:3:1,2"}}, {1, {"a1:3:1,2"}}, {2, {"a1:3:1"}}};
    prune_map prune;
    std::string why = agree_on_creations(made, true, prune);
    EXPECT_NE(why.find("rank 0 and 1 other(s) of the 3 members"), std::string::npos) << why;
    EXPECT_NE(why.find("a restart could not rebuild it"), std::string::npos) << why;
    // Between epochs nothing is refused (the next epoch checks).
    EXPECT_EQ(agree_on_creations(made, false, prune), "");
}

TEST(Creations, OrdersNoRestartCanFollowAreRefused) {
    // Two creations over different parents, made in opposite orders on the two ranks (threads):
    // each rank's restart would wait in the one the other replays second.
    made_lists made{{0, {"a1:2:1@1", "b2:2:1@2"}}, {1, {"a1:2:1@2", "b2:2:1@1"}}};
    prune_map prune;
    std::string why = agree_on_creations(made, true, prune);
    EXPECT_NE(why.find("cannot replay in one order on every rank"), std::string::npos) << why;
}

TEST(Creations, OrdersOfDifferentRanksThatOneOrderFollowsAgree) {
    // Rank 0 replays a1 then b2, rank 1 a1 then c3, rank 2 b2 then c3 (each rank is a member of
    // two of the three parents): a1, b2, c3 follows every rank's order.
    made_lists made{{0, {"a1:2:1@1", "b2:2:1@2"}},
                    {1, {"a1:2:1@1", "c3:2:1@2"}},
                    {2, {"b2:2:1@1", "c3:2:1@2"}}};
    prune_map prune;
    EXPECT_EQ(agree_on_creations(made, true, prune), "");
}

TEST(Creations, APrunedCreationDoesNotOrderTheOthers) {
    // The opposite orders involve a creation dead everywhere: nobody replays it, so no conflict.
    made_lists made{{0, {"a1:2:1~@1", "b2:2:1@2"}}, {1, {"a1:2:1~@2", "b2:2:1@1"}}};
    prune_map prune;
    EXPECT_EQ(agree_on_creations(made, true, prune), "");
    EXPECT_EQ(prune["a1"], std::vector<std::string>{"1"});
}

TEST(Creations, MalformedListIsRefused) {
    made_lists made{{0, {"a1"}}};
    prune_map prune;
    EXPECT_EQ(agree_on_creations(made, true, prune), "rank 0 sent a malformed creation list");
}

} // namespace
} // namespace ghost::run
