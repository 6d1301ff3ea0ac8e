#!/usr/bin/env python3
"""Discovers tact's API by server reflection, with no proto files: grpcio-reflection's
client speaks grpc.reflection.v1alpha.

Usage: discover.py [HOST:PORT]   (or TACT_ADDR; default 127.0.0.1:50051)
"""

import os
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TACT_ADDR", "127.0.0.1:50051")
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=5)
        db = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(db)
        for service in db.get_services():
            print(f"service {service}")
        policy = pool.FindServiceByName("tact.v1.ContactPolicy")
        for m in policy.methods:
            print(f"    rpc {m.name}({m.input_type.full_name}) returns ({m.output_type.full_name})")


if __name__ == "__main__":
    main()
