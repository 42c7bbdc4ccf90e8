// autojoin.js is bundled into both harnesses' pages (esbuild follows the
// relative import from ../resident/page and ../elementcall/page). It
// imports nothing: each page passes its own matrix-js-sdk's names in.

// autoJoin joins every room client's user is invited to, as the pages do
// with #autojoin=1: "joined" {roomId} when done, "error" {roomId, message}
// when the join failed. membershipEvent is matrix-js-sdk's
// RoomMemberEvent.Membership.
export function autoJoin(client, membershipEvent, emit) {
  client.on(membershipEvent, (_ev, member) => {
    if (member.userId !== client.getUserId() || member.membership !== "invite") return;
    client
      .joinRoom(member.roomId)
      .then(() => emit("joined", { roomId: member.roomId }))
      .catch((err) => emit("error", { roomId: member.roomId, message: `join: ${err.message}` }));
  });
}
