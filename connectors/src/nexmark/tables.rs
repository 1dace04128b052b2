//! The three Nexmark tables: their schemas (Flink's nexmark-flink columns in
//! snake case) and the conversion of generated events to Arrow columns.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use nexmark::event::{Auction, Bid, Event, EventType, Person};
use weir_engine::{Error, Result};

/// Which of the three tables a source produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableType {
    /// People registering to the auction site.
    Person,
    /// Items put up for auction.
    Auction,
    /// Bids on auctions.
    Bid,
}

impl TableType {
    /// Parses `'nexmark.table.type'` (case-insensitive).
    pub fn parse(key: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "person" => Ok(TableType::Person),
            "auction" => Ok(TableType::Auction),
            "bid" => Ok(TableType::Bid),
            _ => Err(Error::invalid_option(
                key,
                format!("option '{key}' = '{value}' must be 'person', 'auction' or 'bid'"),
            )),
        }
    }

    /// The generator's event type.
    pub fn event_type(self) -> EventType {
        match self {
            TableType::Person => EventType::Person,
            TableType::Auction => EventType::Auction,
            TableType::Bid => EventType::Bid,
        }
    }

    /// The table's columns.
    pub fn schema(self) -> SchemaRef {
        let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
        let columns: Vec<(&str, DataType)> = match self {
            TableType::Person => vec![
                ("id", DataType::Int64),
                ("name", DataType::Utf8),
                ("email_address", DataType::Utf8),
                ("credit_card", DataType::Utf8),
                ("city", DataType::Utf8),
                ("state", DataType::Utf8),
                ("date_time", ts()),
                ("extra", DataType::Utf8),
            ],
            TableType::Auction => vec![
                ("id", DataType::Int64),
                ("item_name", DataType::Utf8),
                ("description", DataType::Utf8),
                ("initial_bid", DataType::Int64),
                ("reserve", DataType::Int64),
                ("date_time", ts()),
                ("expires", ts()),
                ("seller", DataType::Int64),
                ("category", DataType::Int64),
                ("extra", DataType::Utf8),
            ],
            TableType::Bid => vec![
                ("auction", DataType::Int64),
                ("bidder", DataType::Int64),
                ("price", DataType::Int64),
                ("channel", DataType::Utf8),
                ("url", DataType::Utf8),
                ("date_time", ts()),
                ("extra", DataType::Utf8),
            ],
        };
        // The generator never produces nulls.
        let fields: Vec<Field> = columns
            .into_iter()
            .map(|(name, data_type)| Field::new(name, data_type, false))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The columns `indices` (of [`TableType::schema`]) of `events`, which are all of this table's type.
    pub fn columns(self, events: &[Event], indices: &[usize]) -> Result<Vec<ArrayRef>> {
        match self {
            TableType::Person => {
                let rows = events.iter().map(as_person).collect::<Result<Vec<_>>>()?;
                indices.iter().map(|&i| person_column(&rows, i)).collect()
            }
            TableType::Auction => {
                let rows = events.iter().map(as_auction).collect::<Result<Vec<_>>>()?;
                indices.iter().map(|&i| auction_column(&rows, i)).collect()
            }
            TableType::Bid => {
                let rows = events.iter().map(as_bid).collect::<Result<Vec<_>>>()?;
                indices.iter().map(|&i| bid_column(&rows, i)).collect()
            }
        }
    }
}

fn wrong_event(event: &Event, wanted: &str) -> Error {
    Error::internal(format!(
        "nexmark: a {wanted} table received a {:?} event",
        event.event_type()
    ))
}

fn as_person(event: &Event) -> Result<&Person> {
    match event {
        Event::Person(p) => Ok(p),
        other => Err(wrong_event(other, "person")),
    }
}

fn as_auction(event: &Event) -> Result<&Auction> {
    match event {
        Event::Auction(a) => Ok(a),
        other => Err(wrong_event(other, "auction")),
    }
}

fn as_bid(event: &Event) -> Result<&Bid> {
    match event {
        Event::Bid(b) => Ok(b),
        other => Err(wrong_event(other, "bid")),
    }
}

fn ints<T>(rows: &[&T], f: impl Fn(&T) -> usize) -> ArrayRef {
    // Ids, prices and categories are far below i64::MAX.
    Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| f(r) as i64),
    ))
}

fn strings<T>(rows: &[&T], f: impl Fn(&T) -> &str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
}

fn times<T>(rows: &[&T], f: impl Fn(&T) -> u64) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter_values(
        rows.iter().map(|r| f(r) as i64),
    ))
}

fn no_column(table: &str, index: usize) -> Error {
    Error::internal(format!("nexmark: the {table} table has no column {index}"))
}

fn person_column(rows: &[&Person], index: usize) -> Result<ArrayRef> {
    Ok(match index {
        0 => ints(rows, |p| p.id),
        1 => strings(rows, |p| &p.name),
        2 => strings(rows, |p| &p.email_address),
        3 => strings(rows, |p| &p.credit_card),
        4 => strings(rows, |p| &p.city),
        5 => strings(rows, |p| &p.state),
        6 => times(rows, |p| p.date_time),
        7 => strings(rows, |p| &p.extra),
        _ => return Err(no_column("person", index)),
    })
}

fn auction_column(rows: &[&Auction], index: usize) -> Result<ArrayRef> {
    Ok(match index {
        0 => ints(rows, |a| a.id),
        1 => strings(rows, |a| &a.item_name),
        2 => strings(rows, |a| &a.description),
        3 => ints(rows, |a| a.initial_bid),
        4 => ints(rows, |a| a.reserve),
        5 => times(rows, |a| a.date_time),
        6 => times(rows, |a| a.expires),
        7 => ints(rows, |a| a.seller),
        8 => ints(rows, |a| a.category),
        9 => strings(rows, |a| &a.extra),
        _ => return Err(no_column("auction", index)),
    })
}

fn bid_column(rows: &[&Bid], index: usize) -> Result<ArrayRef> {
    Ok(match index {
        0 => ints(rows, |b| b.auction),
        1 => ints(rows, |b| b.bidder),
        2 => ints(rows, |b| b.price),
        3 => strings(rows, |b| &b.channel),
        4 => strings(rows, |b| &b.url),
        5 => times(rows, |b| b.date_time),
        6 => strings(rows, |b| &b.extra),
        _ => return Err(no_column("bid", index)),
    })
}
