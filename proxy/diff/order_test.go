package diff

// benchOrder is a realistic order answer of about 2 KB: nested objects, an
// items array of objects, timestamps, ids, numbers and nulls.
const benchOrder = `{"id":"ord_8f14e45fceea167a","user_id":4021,"status":"paid","currency":"EUR",` +
	`"created_at":"2025-03-04T05:06:07.000Z","updated_at":"2025-03-04T05:06:09.412Z",` +
	`"customer":{"id":"cus_19ab2","email":"ada@example.com","name":"Ada Lovelace","tier":"gold","marketing_opt_in":false},` +
	`"shipping_address":{"line1":"12 Analytical Row","line2":null,"city":"London","postcode":"NW1 6XE","country":"GB"},` +
	`"billing_address":{"line1":"12 Analytical Row","line2":null,"city":"London","postcode":"NW1 6XE","country":"GB"},` +
	`"items":[` +
	`{"id":"li_1","sku":"sku-1001","name":"Brass gear, 40 teeth","quantity":2,"unit_price_cents":1299,"total_cents":2598,"tax_cents":520,"discount_cents":0,"tags":["mechanical","brass"],"updated_at":"2025-03-04T05:06:07.001Z"},` +
	`{"id":"li_2","sku":"sku-1002","name":"Steel axle, 12 cm","quantity":1,"unit_price_cents":899,"total_cents":899,"tax_cents":180,"discount_cents":100,"tags":["mechanical"],"updated_at":"2025-03-04T05:06:07.002Z"},` +
	`{"id":"li_3","sku":"sku-2040","name":"Punched card deck (500)","quantity":3,"unit_price_cents":2450,"total_cents":7350,"tax_cents":1470,"discount_cents":0,"tags":["paper","bulk"],"updated_at":"2025-03-04T05:06:07.003Z"},` +
	`{"id":"li_4","sku":"sku-3310","name":"Difference engine manual","quantity":1,"unit_price_cents":4999,"total_cents":4999,"tax_cents":0,"discount_cents":500,"tags":[],"updated_at":"2025-03-04T05:06:07.004Z"},` +
	`{"id":"li_5","sku":"sku-0007","name":"Oil can","quantity":1,"unit_price_cents":350,"total_cents":350,"tax_cents":70,"discount_cents":0,"tags":["consumable"],"updated_at":"2025-03-04T05:06:07.005Z"}],` +
	`"totals":{"subtotal_cents":16196,"tax_cents":2240,"shipping_cents":495,"discount_cents":600,"total_cents":18331},` +
	`"payment":{"id":"pay_5d41402abc4b2a76","method":"card","brand":"visa","last4":"4242","captured":true,"captured_at":"2025-03-04T05:06:08.100Z"},` +
	`"fulfillment":{"status":"pending","carrier":null,"tracking":null,"estimated_delivery":"2025-03-07"},` +
	`"notes":"Leave at the porter's lodge.","metadata":{"channel":"web","campaign":"spring-sale","ab_bucket":17}}`
