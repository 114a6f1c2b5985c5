-- Keys must land where the Java client's default partitioner puts them.
-- The vectors are those of Kafka's own murmur2 unit test.
SELECT k, iq_murmur2(convert_to(k, 'UTF8')) AS murmur2
FROM (VALUES ('21'), ('foobar'), ('a-little-bit-long-string'),
             ('a-little-bit-longer-string'),
             ('lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8'), ('abc')) AS v(k);

-- The seed's keys over three partitions; the empty key is a key, too.
SELECT k, iq_partition_for_key(k, 3) AS partition
FROM (VALUES (''), ('1'), ('2'), ('3'), ('4'), ('5'), ('6'), ('7')) AS v(k);

SELECT iq_partition_for_key('1', 0);
