// The fused line protocol: everything server and client share (see man/fused-protocol.7).

export * from './constants.js';
export * from './encoding.js';
export * from './framing.js';
export * from './request.js';
export * from './reply.js';
export * from './auth.js';
