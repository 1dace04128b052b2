-- The README's demo: Nexmark bids, a 10-second tumbling window, results on the console.
CREATE TABLE bid (
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (
  'connector' = 'nexmark',
  'nexmark.table.type' = 'bid',
  'nexmark.event.num' = '2000000'
);

SELECT window_start, window_end, COUNT(*) AS bids, COUNT(DISTINCT bidder) AS bidders, MAX(price) AS top_price
FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
GROUP BY window_start, window_end;
