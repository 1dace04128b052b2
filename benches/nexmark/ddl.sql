-- The Nexmark streams on Weir's `nexmark` connector (RisingWave's column
-- names), with the event-time columns Flink's Nexmark declares: a
-- watermark 4 seconds behind `date_time`. `nexmark.event.num` bounds them;
-- the test and the benchmark set it. 100 events per second of event time
-- spread a run over windows of seconds. `p_time` is the bids' processing
-- time (q12).
CREATE TABLE person (
  id BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING, state STRING,
  date_time TIMESTAMP(3), extra STRING,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'nexmark.table.type' = 'person', 'nexmark.event.num' = '${EVENTS}',
        'nexmark.first.event.rate' = '${RATE}', 'nexmark.next.event.rate' = '${RATE}');
CREATE TABLE auction (
  id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT,
  date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'nexmark.table.type' = 'auction', 'nexmark.event.num' = '${EVENTS}',
        'nexmark.first.event.rate' = '${RATE}', 'nexmark.next.event.rate' = '${RATE}');
CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  date_time TIMESTAMP(3), extra STRING, p_time AS PROCTIME(),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'nexmark.table.type' = 'bid', 'nexmark.event.num' = '${EVENTS}',
        'nexmark.first.event.rate' = '${RATE}', 'nexmark.next.event.rate' = '${RATE}');
