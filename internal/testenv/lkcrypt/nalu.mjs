// nalu.mjs is esbuild's entry for the H.264 helpers of livekit-client's
// src/ that crypt.mjs compares media/framecrypt with ("lkc" is aliased to
// the installed livekit-client's src directory by lkcrypt.go).
export { processNALUsForEncryption, normalizeAnnexBStartCodes } from 'lkc/e2ee/worker/naluUtils';
export { writeRbsp, parseRbsp, needsRbspUnescaping } from 'lkc/e2ee/utils';
