// Stopping a gRPC server: let calls finish for a moment, then end the ones that would not (follow
// streams never end by themselves).
import type { Server } from '@grpc/grpc-js';

export function shutdownGrpcServer(server: Server, graceMs = 1000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
