"""What the test tiers and the benchmarks share: the real infrastructure (infra), Kafka I/O,
sample events and facts, signal streams with their offline reference, the whole pipeline as
processes, and hostile records. Test modules import from here, never from each other."""
