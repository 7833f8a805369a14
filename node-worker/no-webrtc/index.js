// webtorrent reaches WebRTC through @thaunknown/simple-peer -> webrtc-polyfill
// -> node-datachannel, a native addon whose install downloads a prebuilt binary
// from GitHub. Workers run in Node and talk to TCP peers only, so the root
// package.json overrides webrtc-polyfill with this module. Its exports are
// undefined, which is exactly how simple-peer sees a runtime without WebRTC.
export const RTCPeerConnection = undefined;
export const RTCSessionDescription = undefined;
export const RTCIceCandidate = undefined;
export default {};
