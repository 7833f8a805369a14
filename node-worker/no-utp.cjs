// Stands in for utp-native in the bundled worker: uTP stays off (see build.ts).
module.exports = {};
