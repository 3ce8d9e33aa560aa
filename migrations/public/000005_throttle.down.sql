DROP TABLE IF EXISTS throttle_buckets;
