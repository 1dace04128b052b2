-- q10: log to a file system, partitioned by date and hour.
-- unsupported: not a query but a sink; Weir's filesystem sink has no PARTITIONED BY yet
SELECT auction, bidder, price, date_time, extra, DATE_FORMAT(date_time, 'yyyy-MM-dd') AS dt, DATE_FORMAT(date_time, 'HH:mm') AS hm FROM bid PARTITIONED BY dt
